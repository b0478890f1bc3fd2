//! `$all` read filters: on the stream name or the event type, by prefixes or a regular
//! expression. Regexes use `fancy-regex`, so look-around (as sent by KurrentDB clients) works;
//! matching is unanchored, like .NET's `IsMatch`.

use crate::error::{Error, Result};

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
        let re = fancy_regex::Regex::new(pattern).map_err(|e| {
            Error::invalid(
                "filter",
                format!("invalid regular expression {pattern:?}: {e}"),
            )
        })?;
        Ok(EventFilter {
            on,
            matcher: Matcher::Regex(re),
        })
    }

    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        let value = match self.on {
            FilterOn::StreamName => stream,
            FilterOn::EventType => event_type,
        };
        match &self.matcher {
            Matcher::Prefixes(ps) => ps.iter().any(|p| value.starts_with(p.as_str())),
            // A regex that exceeds its backtracking limit matches nothing rather than failing the read.
            Matcher::Regex(re) => re.is_match(value).unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_regexes() {
        let f = EventFilter::prefixes(FilterOn::StreamName, ["order-", "cart-"]).unwrap();
        assert!(f.matches("order-1", "X"));
        assert!(!f.matches("user-1", "order-"));
        let f = EventFilter::regex(FilterOn::EventType, "^Order(Placed|Paid)$").unwrap();
        assert!(f.matches("s", "OrderPaid"));
        assert!(!f.matches("s", "OrderShipped"));
        // The negative look-ahead the Python client sends to hide system events.
        let f = EventFilter::regex(FilterOn::EventType, r"^(?!\$).*").unwrap();
        assert!(f.matches("s", "Created"));
        assert!(!f.matches("s", "$metadata"));
        assert!(EventFilter::regex(FilterOn::EventType, "(").is_err());
        assert!(EventFilter::prefixes(FilterOn::EventType, Vec::<String>::new()).is_err());
    }
}
