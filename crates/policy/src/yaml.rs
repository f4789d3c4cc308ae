//! A small YAML tree that remembers where every node came from.
//!
//! The loader reports every problem as `line:column`, so it needs positions
//! on keys and values alike; serde-based loaders lose them. The tree is built
//! from saphyr-parser's events, which makes it a few dozen lines and keeps the
//! YAML semantics (anchors, quoting, block scalars) in a maintained crate.

use saphyr_parser::{Event, Parser, ScalarStyle};
use std::borrow::Cow;

mod fast;

/// A position in the source: 1-based line and column, as editors show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// Scalars borrow from the text where YAML allows (plain and simply quoted
/// scalars), so loading a large policy does not copy every string.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    /// A scalar and whether it was plain (unquoted): `null`, `~` and the
    /// empty scalar mean "nothing" only when plain.
    Scalar {
        text: Cow<'a, str>,
        plain: bool,
    },
    Seq(Vec<Node<'a>>),
    /// Keys in document order; duplicates are rejected while building.
    Map(Vec<(Node<'a>, Node<'a>)>),
}

#[derive(Clone, Debug)]
pub struct Node<'a> {
    pub pos: Pos,
    pub value: Value<'a>,
}

impl Node<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for a plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Aliases can expand exponentially ("billion laughs"); a policy never needs
/// more nodes than this, so a file that expands past it is refused.
const MAX_NODES: usize = 2_000_000;
/// Deep nesting would overflow the stack of the recursive walkers.
const MAX_DEPTH: usize = 64;

fn pos_of(m: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: u32::try_from(m.line()).unwrap_or(u32::MAX),
        col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
    }
}

/// Parses one YAML document. An empty stream yields `None`.
///
/// Most policies are in the subset [`fast`] reads straight from the bytes;
/// everything else (and every error) goes through saphyr-parser.
pub fn parse(text: &str) -> Result<Option<Node<'_>>, YamlError> {
    match fast::parse(text) {
        Some(root) => Ok(Some(root)),
        None => parse_events(text),
    }
}

/// The general path: saphyr-parser's events, built into a tree.
fn parse_events(text: &str) -> Result<Option<Node<'_>>, YamlError> {
    let mut b = Builder {
        stack: Vec::new(),
        anchors: Vec::new(),
        nodes: 0,
        root: None,
        docs: 0,
    };
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| YamlError {
            pos: pos_of(e.marker()),
            message: format!("invalid YAML: {}", e.info()),
        })?;
        b.event(ev, pos_of(&span.start))?;
    }
    Ok(b.root)
}

enum Open<'a> {
    Seq(Pos, usize, Vec<Node<'a>>),
    Map(Pos, usize, Vec<(Node<'a>, Node<'a>)>, Option<Node<'a>>),
}

struct Builder<'a> {
    stack: Vec<Open<'a>>,
    anchors: Vec<(usize, Node<'a>)>,
    nodes: usize,
    root: Option<Node<'a>>,
    docs: usize,
}

impl<'a> Builder<'a> {
    fn event(&mut self, ev: Event<'a>, pos: Pos) -> Result<(), YamlError> {
        let err = |message: &str| YamlError {
            pos,
            message: message.to_string(),
        };
        match ev {
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    return Err(err("a policy is one YAML document; found a second one"));
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    pos,
                    value: Value::Scalar {
                        text,
                        plain: style == ScalarStyle::Plain,
                    },
                };
                self.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| err("alias to an unknown anchor"))?;
                self.nodes += count(&node);
                if self.nodes > MAX_NODES {
                    return Err(err("the document expands to too many nodes"));
                }
                self.push(Node { pos, ..node }, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(err("the document is nested too deeply"));
                }
                self.stack.push(Open::Seq(pos, anchor, Vec::new()));
            }
            Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(err("the document is nested too deeply"));
                }
                self.stack.push(Open::Map(pos, anchor, Vec::new(), None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(p, a, items)) => (
                        Node {
                            pos: p,
                            value: Value::Seq(items),
                        },
                        a,
                    ),
                    Some(Open::Map(p, a, entries, _)) => (
                        Node {
                            pos: p,
                            value: Value::Map(entries),
                        },
                        a,
                    ),
                    None => return Err(err("unbalanced YAML structure")),
                };
                self.push(node, anchor)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn push(&mut self, node: Node<'a>, anchor: usize) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos: node.pos,
                message: "the document expands to too many nodes".into(),
            });
        }
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(_, _, items)) => items.push(node),
            Some(Open::Map(_, _, entries, pending)) => match pending.take() {
                None => {
                    let Some(key) = node.as_str() else {
                        return Err(YamlError {
                            pos: node.pos,
                            message: "mapping keys must be plain strings".into(),
                        });
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(key))
                    {
                        return Err(YamlError {
                            pos: node.pos,
                            message: format!(
                                "duplicate key `{key}` (first at line {})",
                                first.pos.line
                            ),
                        });
                    }
                    *pending = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

fn count(n: &Node<'_>) -> usize {
    match &n.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("a:\n  b: [1, x]\n").unwrap().unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        assert_eq!(e[0].0.pos, Pos { line: 1, col: 1 });
        let Value::Map(inner) = &e[0].1.value else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 2, col: 3 });
        let Value::Seq(items) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!(items[1].pos, Pos { line: 2, col: 10 });
    }

    #[test]
    fn duplicate_keys_and_laughs_are_refused() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert!(e.message.contains("duplicate key `a`"));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            bomb.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        assert!(parse(&bomb).unwrap_err().message.contains("too many nodes"));
    }

    #[test]
    fn nulls_and_quotes() {
        let n = parse("a: ~\nb: '~'\nc:\n").unwrap().unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        assert!(e[0].1.is_null());
        assert!(!e[1].1.is_null());
        assert!(e[2].1.is_null());
        assert!(parse("").unwrap().is_none());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    /// The fast path either gives up or builds the tree saphyr builds.
    fn same_as_saphyr(text: &str) -> bool {
        let Some(fast) = fast::parse(text) else {
            return false;
        };
        match parse_events(text) {
            Ok(Some(slow)) => assert_eq!(
                format!("{fast:?}"),
                format!("{slow:?}"),
                "fast and saphyr trees differ on {text:?}"
            ),
            other => panic!("fast path accepted {text:?}, saphyr: {other:?}"),
        }
        true
    }

    fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                yaml_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }

    #[test]
    fn fast_path_matches_saphyr_on_the_fixtures() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        for d in ["tests", "examples"] {
            yaml_files(&root.join(d), &mut files);
        }
        assert!(files.len() > 20, "fixtures not found under {root:?}");
        let mut fast = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            if same_as_saphyr(&text) {
                fast += 1;
            }
            // Every prefix cut at a line end, too: truncated structures.
            for (i, _) in text.match_indices('\n') {
                same_as_saphyr(&text[..i]);
                same_as_saphyr(&text[..=i]);
            }
        }
        // Most policies are in the subset; the rest must still agree.
        assert!(fast * 2 > files.len(), "{fast} of {} fast", files.len());
    }

    #[test]
    fn fast_path_cases() {
        for ok in [
            "a: 1\n",
            "a: 1",
            "  a: 1\n  b: x y  # c\n",
            "a:\n  b: [1, x]\n",
            "a:\n- x\n- y\nb: z\n",
            "a:\n  - id: x\n    e: [a, 'b', \"c\"]\n  -   id: y\n",
            "a: { b: [ ], c: {}, d: [x,y] }\n",
            "# c\n\na: 1 # c\n\n# d\n",
            "a: http://x:80/#y\n",
            "a: [ x , y ]\n",
            "'a': \"b c\"\n",
            "- a\n- [b]\n-\n  c: d\n",
            "a: ~\nb: null\n",
            "a:\n  # c\n  b: 1\n",
            "a:\n- # c\n  b: 1\n",
            "a:\n-\n  b: 1\n",
        ] {
            assert!(same_as_saphyr(ok), "{ok:?} should take the fast path");
        }
        for slow in [
            "",
            "a:\n",
            "a: 1\na: 2\n",
            "a: b\n  c\n",
            "a: &x 1\nb: *x\n",
            "a: |\n  x\n",
            "---\na: 1\n",
            "a: 'it''s'\n",
            "a: 'x''\n",
            "a: \"x\\ny\"\n",
            "a: [x,\n  y]\n",
            "a:\tb\n",
            "a: 1\r\n",
            "a: b: c\n",
            "a: [x, ]\n",
            "a: {x}\n",
            "a: {x: }\n",
            "x\n",
            "[a]\n",
            "a: caf\u{e9}\n",
            "a: 1\n  b: 2\n",
            "- - a\n",
            "a : 1\n",
            "a: x\n# c\n  y\n",
        ] {
            assert!(!same_as_saphyr(slow), "{slow:?} should be left to saphyr");
        }
    }

    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "a", "b", "id", "x y", "1", "~", "null", "http://h", "a#b", ":", ": ", " ", "  ", "\n",
        "\n  ", "\n    ", "- ", "-", "[", "]", "{", "}", ",", ", ", "'q'", "''", "'", "\"d\"",
        "\"", "#c", " #c", "*a", "&a", "!t", "?", "|", ">", "---", "...", "%", "\\", "\t", "\r",
        "e\u{301}", ".", "/", "a:b",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn fast_path_matches_saphyr_on_token_soup(ix in proptest::collection::vec(0..PIECES.len(), 0..40)) {
            let text: String = ix.iter().map(|&i| PIECES[i]).collect();
            same_as_saphyr(&text);
        }

        #[test]
        fn fast_path_matches_saphyr_on_mutations(at in 0usize..POLICY.len(), len in 0usize..12, with in "[ -~\\n]{0,8}") {
            let end = (at + len).min(POLICY.len());
            let text = format!("{}{}{}", &POLICY[..at], with, &POLICY[end..]);
            same_as_saphyr(&text);
        }
    }

    const POLICY: &str = r#"version: 1
defaults: { decision: deny, mode: enforce }
machines:
  web: { roles: [frontend, api], env: prod }
  m2: {roles: [x]}
services:
  stripe:
    hosts: [api.stripe.com, "*.stripe.net"]
    ports: [443]
    tags: [pay]
rules:
  - id: a
    effect: allow
    from: { roles: [frontend] }
    to: { services: [stripe], hosts: ["*.x.com"], cidrs: [10.0.0.0/8] }
    methods: [GET]
    paths: ["/v1/**"]
  # a comment
  - id: b
    effect: deny
    reason: no  # why
    data:
      - email
"#;
}
