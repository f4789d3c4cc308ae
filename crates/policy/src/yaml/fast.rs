//! A fast path for the YAML policies are usually written in.
//!
//! saphyr-parser is exact but costs a few hundred instructions per byte and
//! an allocation per plain scalar; on a large policy it was most of compile
//! time. This reader handles a plain subset of YAML directly from the bytes
//! and borrows every scalar from the text:
//!
//! - block mappings and sequences (including `- key: value` items and
//!   sequences at the indentation of their key), nested by indentation;
//! - one-line flow collections (`[a, b]`, `{ k: v }`), nested;
//! - plain scalars on one line, and quoted scalars without escapes;
//! - blank lines and comments.
//!
//! It gives up (returns `None`) on everything else, and on anything that is
//! an error, so that [`super::parse`] falls back to saphyr-parser: non-ASCII
//! text, tabs, carriage returns, anchors, aliases, tags, block scalars,
//! multi-line scalars, escapes, directives and document markers, empty
//! (null) values, duplicate keys, and any structure it is not sure about.
//! When it does return a tree, the tree is the one the saphyr path builds,
//! positions included (the tests compare the two).

use super::{MAX_DEPTH, MAX_NODES, Node, Pos, Value};
use std::borrow::Cow;

/// Parses `text` if it is in the subset; `None` means "ask saphyr".
pub(super) fn parse(text: &str) -> Option<Node<'_>> {
    // Plain ASCII lines only: columns are then byte offsets, and no
    // character has a meaning this reader does not know about.
    if !text
        .bytes()
        .all(|b| b == b'\n' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    let mut r = Reader {
        text,
        b: text.as_bytes(),
        i: 0,
        line: 1,
        ls: 0,
        nodes: 0,
        depth: 0,
        items: Vec::new(),
        entries: Vec::new(),
    };
    r.seek_content()?;
    if r.eof() {
        return None;
    }
    let col = r.col();
    let root = if r.dash_entry() {
        r.block_seq(col, false)?
    } else {
        r.block_map(col, None)?
    };
    r.eof().then_some(root)
}

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    /// The byte the reader is at.
    i: usize,
    /// 1-based line of `i`.
    line: u32,
    /// Where the line of `i` starts.
    ls: usize,
    nodes: usize,
    depth: usize,
    /// Entries of the open collections, innermost last: each collection is
    /// then allocated once, at its final size.
    items: Vec<Node<'a>>,
    entries: Vec<(Node<'a>, Node<'a>)>,
}

/// Characters a plain scalar may start with here: no YAML indicator.
fn plain_start(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'~' | b'(' | b'$' | b'+')
}

fn is_flow(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

/// A space, a line break or the end of the text (0: the text holds no NUL).
fn blank_or_end(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | 0)
}

impl<'a> Reader<'a> {
    fn peek(&self) -> u8 {
        self.b.get(self.i).copied().unwrap_or(0)
    }

    fn peek_at(&self, n: usize) -> u8 {
        self.b.get(self.i + n).copied().unwrap_or(0)
    }

    fn eof(&self) -> bool {
        self.i >= self.b.len()
    }

    /// 0-based column of `i`.
    fn col(&self) -> usize {
        self.i - self.ls
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: u32::try_from(self.col() + 1).unwrap_or(u32::MAX),
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek() == b' ' {
            self.i += 1;
        }
    }

    fn node(&mut self, pos: Pos, value: Value<'a>) -> Option<Node<'a>> {
        self.nodes += 1;
        (self.nodes < MAX_NODES).then_some(Node { pos, value })
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth + 1 < MAX_DEPTH).then_some(())
    }

    /// `- ` (or `-` at the end of a line): a block sequence entry.
    fn dash_entry(&self) -> bool {
        self.peek() == b'-' && blank_or_end(self.peek_at(1))
    }

    /// At the start of a line: skips blank and comment lines, and the
    /// indentation of the next line with content. Gives up on document
    /// markers.
    fn seek_content(&mut self) -> Option<()> {
        loop {
            self.skip_spaces();
            match self.peek() {
                b'#' => {
                    while !matches!(self.peek(), b'\n' | 0) {
                        self.i += 1;
                    }
                }
                b'\n' => {}
                _ => break,
            }
            if self.eof() {
                return Some(());
            }
            self.i += 1;
            self.line += 1;
            self.ls = self.i;
        }
        if self.eof() {
            return Some(());
        }
        let line = &self.b[self.ls..];
        if matches!(line[0], b'-' | b'.') && (line.starts_with(b"---") || line.starts_with(b"..."))
        {
            return None;
        }
        Some(())
    }

    /// After a node: the rest of the line must be spaces and perhaps a
    /// comment; then moves to the next line with content (or the end).
    fn next_line(&mut self) -> Option<()> {
        self.skip_spaces();
        if self.peek() == b'#' {
            // A comment needs a space before it.
            if self.i > self.ls && self.b[self.i - 1] != b' ' {
                return None;
            }
            while !matches!(self.peek(), b'\n' | 0) {
                self.i += 1;
            }
        }
        match self.peek() {
            0 => Some(()),
            b'\n' => {
                self.i += 1;
                self.line += 1;
                self.ls = self.i;
                self.seek_content()
            }
            _ => None,
        }
    }

    /// A block sequence whose entries start at column `col`; at its first
    /// `-`. An indentless sequence (the value of a key in the key's column)
    /// is where saphyr puts it: after the first `-` and the spaces and
    /// comment that follow it.
    fn block_seq(&mut self, col: usize, indentless: bool) -> Option<Node<'a>> {
        self.enter()?;
        let mut pos = self.pos();
        // Block sequences can be long (the rules): grown in place rather
        // than copied out of the scratch stack.
        let mut items = Vec::new();
        loop {
            // At a `-` in column `col`.
            self.i += 1;
            self.skip_spaces();
            if indentless && items.is_empty() {
                let eol = self.b[self.i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(self.b.len(), |n| self.i + n);
                pos = if self.peek() == b'#' {
                    Pos {
                        line: self.line,
                        col: u32::try_from(eol - self.ls + 1).unwrap_or(u32::MAX),
                    }
                } else {
                    self.pos()
                };
            }
            let item = match self.peek() {
                b'\n' | 0 | b'#' => {
                    self.next_line()?;
                    if self.eof() || self.col() <= col {
                        return None;
                    }
                    self.block_collection()?
                }
                _ => self.compact_entry(col)?,
            };
            items.push(item);
            if self.eof() || self.col() < col {
                break;
            }
            if self.col() > col {
                return None;
            }
            if !self.dash_entry() {
                // The next key of the mapping this sequence is a value of
                // (or an error, which the caller finds).
                break;
            }
        }
        self.depth -= 1;
        self.node(pos, Value::Seq(items))
    }

    /// What follows `- ` on the line of an entry of the sequence at column
    /// `seq_col`; ends on the next line with content.
    fn compact_entry(&mut self, seq_col: usize) -> Option<Node<'a>> {
        let col = self.col();
        match self.peek() {
            b'[' | b'{' => {
                let n = self.flow_node()?;
                self.next_line()?;
                self.not_deeper(seq_col)?;
                Some(n)
            }
            _ => {
                let (n, is_key) = self.block_scalar()?;
                if is_key {
                    return self.block_map(col, Some(n));
                }
                self.next_line()?;
                self.not_deeper(seq_col)?;
                Some(n)
            }
        }
    }

    /// After a scalar or flow node that ended a line: a more indented line
    /// next would continue it, or be an error.
    fn not_deeper(&self, col: usize) -> Option<()> {
        (self.eof() || self.col() <= col).then_some(())
    }

    /// A block mapping or sequence starting here, on a line of its own.
    fn block_collection(&mut self) -> Option<Node<'a>> {
        let col = self.col();
        if self.dash_entry() {
            self.block_seq(col, false)
        } else {
            self.block_map(col, None)
        }
    }

    /// A block mapping whose keys are at column `col`; at its first key, or
    /// just after it (and its `:`) when `first` is given.
    fn block_map(&mut self, col: usize, mut first: Option<Node<'a>>) -> Option<Node<'a>> {
        self.enter()?;
        let pos = first.as_ref().map_or_else(|| self.pos(), |k| k.pos);
        let base = self.entries.len();
        let mut keys = KeySet::default();
        loop {
            let key = match first.take() {
                Some(k) => k,
                None => {
                    let (k, is_key) = self.block_scalar()?;
                    if !is_key {
                        return None;
                    }
                    k
                }
            };
            if !keys.insert(&key, &self.entries[base..]) {
                return None;
            }
            self.skip_spaces();
            let value = match self.peek() {
                b'\n' | 0 | b'#' => {
                    self.next_line()?;
                    if self.eof() {
                        return None;
                    }
                    if self.col() > col {
                        self.block_collection()?
                    } else if self.col() == col && self.dash_entry() {
                        self.block_seq(col, true)?
                    } else {
                        // An empty value: saphyr knows where it is.
                        return None;
                    }
                }
                b'[' | b'{' => {
                    let n = self.flow_node()?;
                    self.next_line()?;
                    self.not_deeper(col)?;
                    n
                }
                _ => {
                    let (n, is_key) = self.block_scalar()?;
                    if is_key {
                        return None;
                    }
                    self.next_line()?;
                    self.not_deeper(col)?;
                    n
                }
            };
            self.entries.push((key, value));
            if self.eof() || self.col() < col {
                break;
            }
            if self.col() > col {
                return None;
            }
        }
        self.depth -= 1;
        let entries = self.entries.drain(base..).collect();
        self.node(pos, Value::Map(entries))
    }

    /// A scalar in block context, on one line, and whether it is a mapping
    /// key (followed by `:` and a space or the end of the line; the `:` is
    /// consumed).
    fn block_scalar(&mut self) -> Option<(Node<'a>, bool)> {
        let pos = self.pos();
        let (text, plain) = match self.peek() {
            b'"' | b'\'' => (self.quoted()?, false),
            c if plain_start(c) => {
                let start = self.i;
                let mut end = self.i;
                loop {
                    match self.peek() {
                        b'\n' | 0 => break,
                        b' ' => {
                            self.skip_spaces();
                            if matches!(self.peek(), b'\n' | 0 | b'#') {
                                break;
                            }
                        }
                        b':' if blank_or_end(self.peek_at(1)) => break,
                        _ => {
                            self.i += 1;
                            end = self.i;
                        }
                    }
                }
                // The scanner stops at the end of the content; trailing
                // spaces are not part of the scalar.
                self.i = end;
                (Cow::Borrowed(&self.text[start..end]), true)
            }
            _ => return None,
        };
        let is_key = self.peek() == b':' && blank_or_end(self.peek_at(1));
        if is_key {
            // saphyr's simple keys are at most 1024 characters long.
            if self.i - (pos.col as usize - 1 + self.ls) > 1000 {
                return None;
            }
            self.i += 1;
        }
        let n = self.node(pos, Value::Scalar { text, plain })?;
        Some((n, is_key))
    }

    /// A quoted scalar without escapes, on one line; at its opening quote.
    fn quoted(&mut self) -> Option<Cow<'a, str>> {
        let q = self.peek();
        let start = self.i + 1;
        let len = self.b[start..].iter().position(|&c| c == q)?;
        let body = &self.b[start..start + len];
        if body.iter().any(|&c| c == b'\n' || c == b'\\') {
            return None;
        }
        self.i = start + len + 1;
        // `''` is an escaped quote inside a single-quoted scalar.
        if q == b'\'' && self.peek() == b'\'' {
            return None;
        }
        Some(Cow::Borrowed(&self.text[start..start + len]))
    }

    /// A flow collection or scalar, on the current line.
    fn flow_node(&mut self) -> Option<Node<'a>> {
        let pos = self.pos();
        match self.peek() {
            b'[' => {
                self.enter()?;
                self.i += 1;
                self.skip_spaces();
                let base = self.items.len();
                if self.peek() == b']' {
                    self.i += 1;
                } else {
                    loop {
                        let item = self.flow_node()?;
                        self.items.push(item);
                        if self.flow_separator(b']')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
                let items = self.items.drain(base..).collect();
                self.node(pos, Value::Seq(items))
            }
            b'{' => {
                self.enter()?;
                self.i += 1;
                self.skip_spaces();
                let base = self.entries.len();
                let mut keys = KeySet::default();
                if self.peek() == b'}' {
                    self.i += 1;
                } else {
                    loop {
                        let key = match self.peek() {
                            b'"' | b'\'' | b'[' | b'{' => return None,
                            _ => self.flow_node()?,
                        };
                        if !(self.peek() == b':' && self.peek_at(1) == b' ') {
                            return None;
                        }
                        self.i += 1;
                        self.skip_spaces();
                        let value = self.flow_node()?;
                        if !keys.insert(&key, &self.entries[base..]) {
                            return None;
                        }
                        self.entries.push((key, value));
                        if self.flow_separator(b'}')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
                let entries = self.entries.drain(base..).collect();
                self.node(pos, Value::Map(entries))
            }
            b'"' | b'\'' => {
                let text = self.quoted()?;
                self.node(pos, Value::Scalar { text, plain: false })
            }
            c if plain_start(c) => {
                let start = self.i;
                let mut end = self.i;
                loop {
                    match self.peek() {
                        b' ' => {
                            self.skip_spaces();
                            match self.peek() {
                                b',' | b']' | b'}' | b':' => break,
                                b'\n' | 0 | b'#' => return None,
                                _ => {}
                            }
                        }
                        b':' if self.peek_at(1) == b' ' => break,
                        b':' | b'#' | b'\n' | 0 => return None,
                        c if is_flow(c) => break,
                        _ => {
                            self.i += 1;
                            end = self.i;
                        }
                    }
                }
                self.i = end;
                let text = Cow::Borrowed(&self.text[start..end]);
                self.node(pos, Value::Scalar { text, plain: true })
            }
            _ => None,
        }
    }

    /// After an entry of a flow collection: `,` and another entry, or the
    /// closing bracket (true). Trailing commas and line breaks give up.
    fn flow_separator(&mut self, close: u8) -> Option<bool> {
        self.skip_spaces();
        match self.peek() {
            b',' => {
                self.i += 1;
                self.skip_spaces();
                (self.peek() != close).then_some(false)
            }
            c if c == close => {
                self.i += 1;
                Some(true)
            }
            _ => None,
        }
    }
}

/// The keys of one mapping, to refuse duplicates (left to the saphyr path,
/// which reports them). Small mappings compare keys directly; large ones
/// (a `machines:` section) use a hash set.
#[derive(Default)]
struct KeySet<'a> {
    set: Option<std::collections::HashSet<&'a str, foldhash::fast::FixedState>>,
}

const KEYSET_SCAN: usize = 16;

impl<'a> KeySet<'a> {
    /// False if `key` is already a key of `entries` (the mapping so far).
    fn insert(&mut self, key: &Node<'a>, entries: &[(Node<'a>, Node<'a>)]) -> bool {
        let Value::Scalar {
            text: Cow::Borrowed(k),
            ..
        } = key.value
        else {
            return false;
        };
        if let Some(set) = &mut self.set {
            return set.insert(k);
        }
        if entries.iter().any(|(e, _)| e.as_str() == Some(k)) {
            return false;
        }
        if entries.len() + 1 >= KEYSET_SCAN {
            let mut set: std::collections::HashSet<&'a str, _> =
                std::collections::HashSet::with_capacity_and_hasher(
                    64,
                    foldhash::fast::FixedState::default(),
                );
            for (e, _) in entries {
                if let Value::Scalar {
                    text: Cow::Borrowed(s),
                    ..
                } = e.value
                {
                    set.insert(s);
                }
            }
            set.insert(k);
            self.set = Some(set);
        }
        true
    }
}
