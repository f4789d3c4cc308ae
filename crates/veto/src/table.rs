//! Plain-text tables for people (`veto inventory`, `veto machine list`).
//! Every cell is made [`printable`](crate::text::printable) first.

/// Writes rows under a header, columns padded to their widest cell.
pub fn write(
    out: &mut dyn std::io::Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| crate::text::printable(c).into_owned())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|row| row.get(c).map_or(0, |s| s.chars().count()))
                .chain(std::iter::once(header[c].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        cells
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for row in &rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}
