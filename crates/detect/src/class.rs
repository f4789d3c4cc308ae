//! Class identities, custom class definitions and the build error.

use thiserror::Error;

/// Index of a class in a [`crate::Detector`]'s class list.
///
/// The eight built-in classes always have the ids 0 to 7, in the order of
/// [`crate::Detector::builtin_names`]; custom classes follow in the order they
/// were given to [`crate::Detector::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(pub u16);

impl ClassId {
    pub const CREDIT_CARD: ClassId = ClassId(0);
    pub const US_SSN: ClassId = ClassId(1);
    pub const EMAIL: ClassId = ClassId(2);
    pub const IBAN: ClassId = ClassId(3);
    pub const AWS_ACCESS_KEY: ClassId = ClassId(4);
    pub const PRIVATE_KEY: ClassId = ClassId(5);
    pub const JWT: ClassId = ClassId(6);
    pub const GITHUB_TOKEN: ClassId = ClassId(7);

    /// The id as an index into per-class tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// True for the eight classes of policy-v1's "Data classes" table.
    pub fn is_builtin(self) -> bool {
        self.index() < BUILTIN_NAMES.len()
    }
}

/// Names of the built-in classes, indexed by [`ClassId`].
pub(crate) const BUILTIN_NAMES: [&str; 8] = [
    "credit_card",
    "us_ssn",
    "email",
    "iban",
    "aws_access_key",
    "private_key",
    "jwt",
    "github_token",
];

/// What a custom (policy-defined) class looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomPattern {
    /// A pattern in Rust `regex` syntax. `\b` and its relatives are compiled
    /// as ASCII word boundaries (see the crate docs for why).
    Regex(String),
    /// Whole words, matched ASCII-case-insensitively.
    Keywords(Vec<String>),
}

/// A class defined by the policy's `detectors` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomClass {
    pub name: String,
    pub pattern: CustomPattern,
}

impl CustomClass {
    pub fn regex(name: impl Into<String>, pattern: impl Into<String>) -> CustomClass {
        CustomClass {
            name: name.into(),
            pattern: CustomPattern::Regex(pattern.into()),
        }
    }

    pub fn keywords<S: Into<String>>(
        name: impl Into<String>,
        words: impl IntoIterator<Item = S>,
    ) -> CustomClass {
        CustomClass {
            name: name.into(),
            pattern: CustomPattern::Keywords(words.into_iter().map(Into::into).collect()),
        }
    }
}

/// Why a set of custom classes could not be compiled. Every variant names the
/// class so the policy loader can point at the offending detector.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DetectError {
    #[error("data class name is empty")]
    EmptyName,
    #[error("data class `{name}` is defined twice (or shadows a built-in class)")]
    DuplicateName { name: String },
    #[error("data class `{name}`: invalid regex{}: {reason}", at_offset(*.offset))]
    InvalidRegex {
        name: String,
        reason: String,
        /// Byte offset in the pattern where the problem starts, when known.
        offset: Option<usize>,
    },
    #[error(
        "data class `{name}`: the regex can match an empty string, so it would be found in every request"
    )]
    MatchesEmpty { name: String },
    #[error("data class `{name}`: the keyword list is empty")]
    NoKeywords { name: String },
    #[error(
        "data class `{name}`: keyword {} has no letter or digit, so it is never a whole word",
        index + 1
    )]
    InvalidKeyword {
        name: String,
        /// 0-based index in the keyword list.
        index: usize,
    },
    #[error("data class `{name}`: cannot build the matcher: {reason}")]
    Build { name: String, reason: String },
    #[error("too many data classes: {count} (at most {max})")]
    TooManyClasses { count: usize, max: usize },
}

fn at_offset(offset: Option<usize>) -> String {
    match offset {
        Some(o) => format!(" at byte {o}"),
        None => String::new(),
    }
}
