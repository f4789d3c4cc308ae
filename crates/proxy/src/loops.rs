//! Loops and chains (policy `loops:`): veto adds its own id to the
//! `CDN-Loop` header (RFC 8586) of everything it forwards, and reads it on
//! what it receives. A request that already passed this veto more often
//! than the policy allows (a relay forwarding back into veto, an agent
//! calling itself through a webhook) or passed more vetos in all than
//! `max_depth` (a machine-to-machine chain gone long) is refused before
//! anything else is decided: a cascade stops at its second turn.

use http::{HeaderMap, HeaderValue};

const CDN_LOOP: &str = "cdn-loop";

/// How often a request passed this veto, and vetos in all, by its
/// `CDN-Loop` header(s).
pub fn passes(headers: &HeaderMap, own: &str) -> (u32, u32) {
    let (mut mine, mut vetos) = (0u32, 0u32);
    for value in headers.get_all(CDN_LOOP) {
        let Ok(v) = value.to_str() else { continue };
        for item in v.split(',') {
            // `cdn-id [; parameters]`
            let id = item.split(';').next().unwrap_or("").trim();
            if id.eq_ignore_ascii_case(own) {
                mine = mine.saturating_add(1);
            }
            if id.eq_ignore_ascii_case("veto") || id.to_ascii_lowercase().starts_with("veto-") {
                vetos = vetos.saturating_add(1);
            }
        }
    }
    (mine, vetos)
}

/// The chain a request names, for a reason: its `CDN-Loop` values, bounded.
pub fn chain(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for value in headers.get_all(CDN_LOOP) {
        let v = String::from_utf8_lossy(value.as_bytes());
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v.trim());
        if out.len() > 256 {
            out.truncate(256);
            out.push('…');
            break;
        }
    }
    out
}

/// Why the policy refuses a request that passed so far, if it does.
pub fn refused(headers: &HeaderMap, own: &str, rules: veto_policy::LoopRules) -> Option<String> {
    if !headers.contains_key(CDN_LOOP) {
        return None;
    }
    let (mine, vetos) = passes(headers, own);
    if mine > rules.max_passes {
        return Some(format!(
            "this request already passed this veto ({own}) {mine} time(s) (CDN-Loop: {}): a loop; the policy allows {} (loops.max_passes)",
            chain(headers),
            rules.max_passes
        ));
    }
    if vetos > rules.max_depth {
        return Some(format!(
            "this request already passed {vetos} vetos (CDN-Loop: {}): a chain deeper than the policy allows ({}, loops.max_depth)",
            chain(headers),
            rules.max_depth
        ));
    }
    None
}

/// Adds this veto (its id, made once as a header value) to what it
/// forwards.
pub fn add(headers: &mut HeaderMap, own: Option<&HeaderValue>) {
    if let Some(v) = own {
        headers.append(CDN_LOOP, v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CDN_LOOP, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn passes_count_this_veto_and_every_veto() {
        let h = headers(&["cloudflare, veto-ab12; v=1", "Veto-AB12, veto-cd34"]);
        assert_eq!(passes(&h, "veto-ab12"), (2, 3));
        assert_eq!(passes(&HeaderMap::new(), "veto-ab12"), (0, 0));
        let rules = veto_policy::LoopRules::default();
        assert!(refused(&headers(&["veto-ab12"]), "veto-ab12", rules).is_some());
        assert!(refused(&headers(&["veto-cd34"]), "veto-ab12", rules).is_none());
        let deep: Vec<String> = (0..9).map(|i| format!("veto-{i}")).collect();
        let deep = headers(&[&deep.join(", ")]);
        let why = refused(&deep, "veto-ab12", rules).unwrap();
        assert!(
            why.contains("9 vetos") && why.contains("max_depth"),
            "{why}"
        );
    }
}
