//! The bridge between a policy's data classes and the detectors: builds the
//! detector from the policy's `detectors:` and maps what it finds to the
//! policy's class bits, with counts for the audit record (never values).

use std::collections::BTreeMap;
use veto_detect::{ClassId, CustomClass, Detector, Findings, Opaque, RequestParts};
use veto_policy::model::DetectorKind;
use veto_policy::{DataSet, Policy};

pub struct Detectors {
    detector: Detector,
    /// Policy class bit of each detector class id.
    bits: Vec<Option<u8>>,
}

/// What a scan found: the set the policy decides on, and counts per class
/// name for the record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub set: DataSet,
    pub counts: BTreeMap<String, u32>,
    /// Classes (policy bits) found where redaction cannot rewrite them in
    /// place (UTF-16 text, a base64 part…), each with the first reason: a
    /// redact rule naming one must refuse the request instead.
    pub opaque: Vec<(u8, Opaque)>,
    /// Why part of the request could not be read, if it could not (a
    /// multipart part in a transfer encoding veto does not decode).
    pub unreadable: Option<&'static str>,
}

impl Found {
    /// The first class of `classes` found only where it cannot be
    /// redacted in place, and why.
    pub fn unredactable(&self, classes: DataSet) -> Option<(u8, Opaque)> {
        self.opaque
            .iter()
            .copied()
            .find(|(b, _)| classes.contains(*b))
    }
}

impl Detectors {
    pub fn new(policy: &Policy) -> Result<Detectors, String> {
        let custom: Vec<CustomClass> = policy
            .document()
            .detectors
            .iter()
            .map(|d| match &d.kind {
                DetectorKind::Regex(r) => CustomClass::regex(d.name.clone(), r.clone()),
                DetectorKind::Keywords(k) => {
                    CustomClass::keywords(d.name.clone(), k.iter().cloned())
                }
            })
            .collect();
        let detector =
            Detector::new(&custom).map_err(|e| format!("cannot build the data detectors: {e}"))?;
        let bits = (0..detector.class_count())
            .map(|i| policy.class_bit(detector.class_name(ClassId(i as u16))))
            .collect();
        Ok(Detectors { detector, bits })
    }

    /// Scans what a request sends: the target (path and query), header
    /// values and the body.
    pub fn scan(&self, target: &[u8], headers: &[(&[u8], &[u8])], body: &[u8]) -> Found {
        let mut findings = Findings::new();
        self.detector.scan_request(
            RequestParts {
                url: target,
                headers,
                body,
            },
            &mut findings,
        );
        let mut found = Found {
            unreadable: findings.unreadable(),
            ..Found::default()
        };
        for f in findings.iter() {
            if let Some(Some(bit)) = self.bits.get(f.class.0 as usize) {
                found.set.insert(*bit);
                if let Some(why) = f.opaque
                    && !found.opaque.iter().any(|(b, _)| b == bit)
                {
                    found.opaque.push((*bit, why));
                }
            }
            *found
                .counts
                .entry(self.detector.class_name(f.class).to_string())
                .or_default() += 1;
        }
        found
    }

    /// `text` with every value the detectors find in it masked as
    /// redaction masks it (`[REDACTED:email]`): what records keep of a
    /// path or a reason, so the trail never holds the values the policy
    /// exists to keep in. Borrows when nothing is found.
    pub fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut findings = Findings::new();
        self.detector.scan(text.as_bytes(), &mut findings);
        if findings.iter().next().is_none() {
            return std::borrow::Cow::Borrowed(text);
        }
        let masked = veto_detect::redact(text.as_bytes(), findings.iter(), &self.detector);
        std::borrow::Cow::Owned(String::from_utf8_lossy(&masked).into_owned())
    }

    /// The policy class bit of a detector class.
    pub fn bit(&self, class: ClassId) -> Option<u8> {
        self.bits.get(class.0 as usize).copied().flatten()
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }
}
