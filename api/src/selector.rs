//! Selectors: `type:value` facts about a node or a workload, as in SPIRE
//! (`unix:uid:1000`, `tpm:ek_hash:…`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest selector type accepted, in bytes.
pub const MAX_SELECTOR_TYPE_LEN: usize = 64;
/// Longest selector value accepted, in bytes. Long enough for a podman label
/// or a full command line, short enough to keep entries small.
pub const MAX_SELECTOR_VALUE_LEN: usize = 2048;

/// Why a selector is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// No `:` separates the type from the value.
    #[error("selector '{input}' has no ':' between its type and value (expected type:value)")]
    MissingSeparator {
        /// The string given.
        input: String,
    },
    /// Nothing before the first `:`.
    #[error("selector type is empty")]
    EmptyType,
    /// Nothing after the first `:`.
    #[error("selector value is empty")]
    EmptyValue,
    /// A character outside `[a-z0-9_]` in the type.
    #[error("selector type '{kind}' contains {ch:?} at byte offset {offset}; only a-z, 0-9 and '_' are allowed")]
    TypeChar {
        /// The type given.
        kind: String,
        /// The character.
        ch: char,
        /// Its byte offset.
        offset: usize,
    },
    /// A control character in the value.
    #[error("selector value contains the control character {ch:?} at byte offset {offset}")]
    ValueControlChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        offset: usize,
    },
    /// The type is longer than [`MAX_SELECTOR_TYPE_LEN`].
    #[error("selector type is {len} bytes long; the maximum is {max}")]
    TypeTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than [`MAX_SELECTOR_VALUE_LEN`].
    #[error("selector value is {len} bytes long; the maximum is {max}")]
    ValueTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A `type:value` selector. Ordered by type, then value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    /// The selector type, e.g. `unix` (`[a-z0-9_]+`).
    pub kind: String,
    /// The value, e.g. `uid:1000`; may itself contain `:`.
    pub value: String,
}

impl Selector {
    /// Builds a selector from its two parts, validating both.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Result<Self, SelectorError> {
        let s = Selector {
            kind: kind.into(),
            value: value.into(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Parses `type:value`; the type ends at the first `:`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let Some((kind, value)) = s.split_once(':') else {
            return Err(SelectorError::MissingSeparator {
                input: truncate(s, 64),
            });
        };
        Self::new(kind, value)
    }

    /// Checks the invariants; the fields are public, so a selector built by
    /// hand can be checked before it is stored.
    pub fn validate(&self) -> Result<(), SelectorError> {
        if self.kind.is_empty() {
            return Err(SelectorError::EmptyType);
        }
        if self.kind.len() > MAX_SELECTOR_TYPE_LEN {
            return Err(SelectorError::TypeTooLong {
                len: self.kind.len(),
                max: MAX_SELECTOR_TYPE_LEN,
            });
        }
        if let Some((offset, ch)) = self
            .kind
            .char_indices()
            .find(|(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '_'))
        {
            return Err(SelectorError::TypeChar {
                kind: truncate(&self.kind, 64),
                ch,
                offset,
            });
        }
        if self.value.is_empty() {
            return Err(SelectorError::EmptyValue);
        }
        if self.value.len() > MAX_SELECTOR_VALUE_LEN {
            return Err(SelectorError::ValueTooLong {
                len: self.value.len(),
                max: MAX_SELECTOR_VALUE_LEN,
            });
        }
        if let Some((i, ch)) = self.value.char_indices().find(|(_, c)| c.is_control()) {
            return Err(SelectorError::ValueControlChar {
                ch,
                // Offset in the `type:value` form, which is what the user typed.
                offset: self.kind.len() + 1 + i,
            });
        }
        Ok(())
    }

    /// Whether every selector of `wanted` is in `have` (both sorted or not).
    pub fn all_in(wanted: &[Selector], have: &[Selector]) -> bool {
        wanted.iter().all(|w| have.contains(w))
    }
}

/// Sorts and removes duplicates, the canonical form stored in entries.
pub fn normalize_selectors(selectors: &mut Vec<Selector>) {
    selectors.sort();
    selectors.dedup();
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({:?})", self.to_string())
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Selector {
    type Error = SelectorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests;
