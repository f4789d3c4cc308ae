//! The compiled detector.

use std::collections::HashMap;

use crate::class::BUILTIN_NAMES;
use crate::custom::{Custom, CustomScratch};
use crate::decode::PosMap;
use crate::findings::{Scratch, sort_dedup_tail};
use crate::scan::{Builtin, Sink};
use crate::{ClassId, CustomClass, DetectError, Findings, Part};

/// Finds data classes in bytes. Compiled once per policy; immutable and
/// shareable between threads (`Send + Sync`), so one `Arc<Detector>` serves
/// every worker. Per-scan mutable state lives in the caller's [`Findings`].
#[derive(Debug, Clone)]
pub struct Detector {
    names: Vec<String>,
    by_name: HashMap<String, ClassId>,
    builtin: Builtin,
    custom: Custom,
}

impl Detector {
    /// Compiles the built-in classes and the policy's custom ones. Custom
    /// classes get ids after the built-ins, in the order given.
    pub fn new(custom: &[CustomClass]) -> Result<Detector, DetectError> {
        let count = BUILTIN_NAMES.len() + custom.len();
        let max = usize::from(u16::MAX);
        if count > max {
            return Err(DetectError::TooManyClasses { count, max });
        }
        let mut names: Vec<String> = BUILTIN_NAMES.iter().map(|s| s.to_string()).collect();
        let mut by_name: HashMap<String, ClassId> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), ClassId(i as u16)))
            .collect();
        let mut defs = Vec::with_capacity(custom.len());
        for class in custom {
            if class.name.is_empty() {
                return Err(DetectError::EmptyName);
            }
            let id = ClassId(names.len() as u16);
            if by_name.insert(class.name.clone(), id).is_some() {
                return Err(DetectError::DuplicateName {
                    name: class.name.clone(),
                });
            }
            names.push(class.name.clone());
            defs.push((id, class));
        }
        let builtin = Builtin::new().map_err(|e| DetectError::Build {
            name: "built-in classes".into(),
            reason: e.to_string(),
        })?;
        Ok(Detector {
            names,
            by_name,
            builtin,
            custom: Custom::new(&defs)?,
        })
    }

    /// The eight classes of policy-v1's "Data classes" table, in id order.
    pub fn builtin_names() -> &'static [&'static str] {
        &BUILTIN_NAMES
    }

    /// The class's name, or `""` for an id this detector does not have.
    pub fn class_name(&self, id: ClassId) -> &str {
        self.names.get(id.index()).map_or("", String::as_str)
    }

    pub fn class_id(&self, name: &str) -> Option<ClassId> {
        self.by_name.get(name).copied()
    }

    /// Number of classes, built-in and custom.
    pub fn class_count(&self) -> usize {
        self.names.len()
    }

    /// Every class with its id, built-ins first.
    pub fn classes(&self) -> impl Iterator<Item = (ClassId, &str)> + '_ {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (ClassId(i as u16), n.as_str()))
    }

    /// Scans `haystack` as it is (no decoding) and appends its findings,
    /// tagged [`Part::Body`] and sorted by position.
    pub fn scan(&self, haystack: &[u8], out: &mut Findings) {
        self.scan_part(haystack, Part::Body, out);
    }

    /// Like [`Detector::scan`], tagging findings with `part`.
    pub fn scan_part(&self, haystack: &[u8], part: Part, out: &mut Findings) {
        let base = out.items.len();
        self.scan_raw(haystack, 0, part, out);
        sort_dedup_tail(&mut out.items, base);
    }

    /// Scans `hs`, a slice that starts at `offset` of its part.
    pub(crate) fn scan_raw(&self, hs: &[u8], offset: usize, part: Part, out: &mut Findings) {
        let Findings { items, scratch, .. } = out;
        let base = items.len();
        self.scan_into(hs, part, false, items, &mut scratch.custom);
        if offset != 0 {
            for f in &mut items[base..] {
                f.start += offset;
                f.end += offset;
            }
        }
    }

    /// Scans the decoded buffer in `out`'s scratch and maps the findings
    /// back to raw positions of the part.
    pub(crate) fn scan_decoded(&self, part: Part, out: &mut Findings) {
        let Findings {
            items,
            scratch:
                Scratch {
                    decoded,
                    map,
                    custom,
                    ..
                },
            ..
        } = out;
        let base = items.len();
        self.scan_into(decoded, part, true, items, custom);
        map_back(items, base, map);
    }

    fn scan_into(
        &self,
        hs: &[u8],
        part: Part,
        decoded: bool,
        items: &mut Vec<crate::Finding>,
        scratch: &mut CustomScratch,
    ) {
        let mut sink = Sink {
            items,
            part,
            decoded,
        };
        self.builtin.scan(hs, &mut sink);
        if !self.custom.is_empty() {
            self.custom.scan(hs, &mut sink, scratch);
        }
    }
}

pub(crate) fn map_back(items: &mut Vec<crate::Finding>, base: usize, map: &PosMap) {
    let mut w = base;
    for r in base..items.len() {
        let mut f = items[r];
        // A finding always maps (it lies inside the decoded buffer); dropping
        // one that did not would be safer than reporting a wrong range.
        if let Some((s, e)) = map.to_raw(f.start, f.end) {
            f.start = s;
            f.end = e;
            items[w] = f;
            w += 1;
        }
    }
    items.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Detector>();
    }

    #[test]
    fn names_and_errors() {
        let d = Detector::new(&[CustomClass::regex("employee-id", "EMP-[0-9]{6}")]).unwrap();
        assert_eq!(Detector::builtin_names().len(), 8);
        assert_eq!(d.class_id("employee-id"), Some(ClassId(8)));
        assert_eq!(d.class_name(ClassId(8)), "employee-id");
        assert_eq!(d.class_name(ClassId::JWT), "jwt");
        assert_eq!(d.class_name(ClassId(99)), "");
        assert_eq!(d.class_count(), 9);

        let err = |c: CustomClass| Detector::new(&[c]).unwrap_err();
        assert!(matches!(
            err(CustomClass::regex("email", "x")),
            DetectError::DuplicateName { .. }
        ));
        match err(CustomClass::regex("bad", "a(b")) {
            DetectError::InvalidRegex { name, offset, .. } => {
                assert_eq!(name, "bad");
                assert_eq!(offset, Some(1));
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            err(CustomClass::regex("e", "x*")),
            DetectError::MatchesEmpty { .. }
        ));
        assert!(matches!(
            err(CustomClass::keywords("k", Vec::<String>::new())),
            DetectError::NoKeywords { .. }
        ));
        assert!(matches!(
            err(CustomClass::keywords("k", ["ok", " -"])),
            DetectError::InvalidKeyword { index: 1, .. }
        ));
        assert!(matches!(
            err(CustomClass::regex("", "x")),
            DetectError::EmptyName
        ));
        let msg = err(CustomClass::regex("bad", "a(b")).to_string();
        assert!(
            msg.starts_with("data class `bad`: invalid regex at byte 1: "),
            "{msg}"
        );
    }
}
