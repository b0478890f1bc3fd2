//! `$all` read filters: on the stream name or the event type, by prefixes or a regular
//! expression. Regexes use `fancy-regex`, so look-around (as sent by KurrentDB clients) works;
//! matching is unanchored, like .NET's `IsMatch`.
//!
//! A regex is a program a client asks the server to run, so it runs within bounds: the pattern
//! is at most [`MAX_REGEX_LEN`] bytes, its compiled form is size-limited, and matching one value
//! may take at most [`REGEX_BACKTRACK_LIMIT`] backtracking steps. A value that needs more fails
//! the read or subscription with an error naming the pattern and the value, instead of burning
//! a core.

use crate::error::{Error, Result};

/// Longest accepted regex pattern, in bytes.
pub const MAX_REGEX_LEN: usize = 4096;
/// Backtracking steps allowed to match one stream name or event type (fancy-regex's default is
/// 1,000,000; a stream name needs a handful).
pub const REGEX_BACKTRACK_LIMIT: usize = 10_000;
/// Approximate size limit of the compiled regex (and of each delegated lazy DFA's cache).
const REGEX_COMPILED_LIMIT: usize = 1 << 20;
/// Instructions the regex's backtracking program may have.
const REGEX_PROGRAM_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOn {
    StreamName,
    EventType,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    /// Matches when the value starts with any of these.
    Prefixes(Vec<String>),
    Regex(fancy_regex::Regex),
}

/// A filter on `$all` reads and subscriptions.
#[derive(Debug, Clone)]
pub struct EventFilter {
    pub on: FilterOn,
    pub matcher: Matcher,
}

impl EventFilter {
    pub fn prefixes(
        on: FilterOn,
        prefixes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self> {
        let prefixes: Vec<String> = prefixes.into_iter().map(Into::into).collect();
        if prefixes.is_empty() {
            return Err(Error::invalid(
                "filter",
                "a prefix filter needs at least one prefix",
            ));
        }
        Ok(EventFilter {
            on,
            matcher: Matcher::Prefixes(prefixes),
        })
    }

    pub fn regex(on: FilterOn, pattern: &str) -> Result<Self> {
        if pattern.len() > MAX_REGEX_LEN {
            return Err(Error::invalid(
                "filter",
                format!(
                    "the regular expression is {} bytes, over the limit of {MAX_REGEX_LEN}",
                    pattern.len()
                ),
            ));
        }
        let re = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(REGEX_BACKTRACK_LIMIT)
            .delegate_size_limit(REGEX_COMPILED_LIMIT)
            .delegate_dfa_size_limit(REGEX_COMPILED_LIMIT)
            .max_prog_size(REGEX_PROGRAM_LIMIT)
            .build()
            .map_err(|e| {
                let shown: String = pattern.chars().take(200).collect();
                Error::invalid(
                    "filter",
                    format!("invalid or too complex regular expression {shown:?}: {e}"),
                )
            })?;
        Ok(EventFilter {
            on,
            matcher: Matcher::Regex(re),
        })
    }

    /// Whether the event passes; a regex that needs more than its matching budget on this
    /// value is an error naming both.
    pub fn matches(&self, stream: &str, event_type: &str) -> Result<bool> {
        let value = match self.on {
            FilterOn::StreamName => stream,
            FilterOn::EventType => event_type,
        };
        match &self.matcher {
            Matcher::Prefixes(ps) => Ok(ps.iter().any(|p| value.starts_with(p.as_str()))),
            Matcher::Regex(re) => re.is_match(value).map_err(|e| {
                let what = match self.on {
                    FilterOn::StreamName => "stream name",
                    FilterOn::EventType => "event type",
                };
                let shown: String = re.as_str().chars().take(200).collect();
                Error::invalid(
                    "filter",
                    format!(
                        "the regular expression {shown:?} needs more than {REGEX_BACKTRACK_LIMIT} backtracking steps on the {what} {value:?} ({e}); simplify it"
                    ),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_regexes() {
        let f = EventFilter::prefixes(FilterOn::StreamName, ["order-", "cart-"]).unwrap();
        assert!(f.matches("order-1", "X").unwrap());
        assert!(!f.matches("user-1", "order-").unwrap());
        let f = EventFilter::regex(FilterOn::EventType, "^Order(Placed|Paid)$").unwrap();
        assert!(f.matches("s", "OrderPaid").unwrap());
        assert!(!f.matches("s", "OrderShipped").unwrap());
        // The negative look-ahead the Python client sends to hide system events.
        let f = EventFilter::regex(FilterOn::EventType, r"^(?!\$).*").unwrap();
        assert!(f.matches("s", "Created").unwrap());
        assert!(!f.matches("s", "$metadata").unwrap());
        assert!(EventFilter::regex(FilterOn::EventType, "(").is_err());
        assert!(EventFilter::prefixes(FilterOn::EventType, Vec::<String>::new()).is_err());
    }

    #[test]
    fn regexes_run_within_bounds() {
        let long = "a".repeat(MAX_REGEX_LEN + 1);
        let err = EventFilter::regex(FilterOn::StreamName, &long).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
        // Catastrophic backtracking: an error naming the value, quickly.
        let f = EventFilter::regex(FilterOn::StreamName, r"(a*)*\1b").unwrap();
        let started = std::time::Instant::now();
        let err = f.matches(&"a".repeat(200), "E").unwrap_err();
        assert!(err.to_string().contains("backtracking"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A huge compiled program is refused at compile time.
        let err = EventFilter::regex(FilterOn::StreamName, "(x{1000}){1000}").unwrap_err();
        assert!(err.to_string().contains("too complex"), "{err}");
    }
}
