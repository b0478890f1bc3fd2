//! Derived streams: `$ce-<category>` (every event of the streams in a category) and
//! `$et-<event type>` (every event of a type), maintained by the index with every commit and
//! rebuilt from the log like the stream index. No record is written for them: each holds, at
//! dense revisions 0, 1, 2… in log order, the log positions of the events it lists, so a
//! revision never changes once assigned (a rebuild assigns the same ones) and a reader's
//! checkpoint stays valid.
//!
//! `$streams` lists the first event of every user stream, so its entries are the streams in
//! the order they were created (a soft-deleted stream that is appended to again continues its
//! revisions, and is not listed twice).
//!
//! Categories are those of user streams (names not starting with `$`): a stream's category is
//! its name up to the first separator (or the last, if so configured); a name without the
//! separator, or starting with it, has no category. `$et-<type>` lists every event of the type
//! in user streams, and in system streams when the type does not start with `$` (so that an
//! event-type prefix not starting with `$` matches exactly what the `$et-` streams list).

/// Names of category streams start with this.
pub const CATEGORY_PREFIX: &str = "$ce-";
/// Names of event-type streams start with this.
pub const EVENT_TYPE_PREFIX: &str = "$et-";
/// The stream listing the first event (revision 0) of every user stream, in creation order.
pub const STREAMS_STREAM: &str = "$streams";

/// How a stream's category is taken from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryRule {
    pub separator: char,
    /// Cut at the last separator instead of the first.
    pub from_last: bool,
}

impl Default for CategoryRule {
    /// KurrentDB's default: up to the first `-`.
    fn default() -> Self {
        CategoryRule {
            separator: '-',
            from_last: false,
        }
    }
}

impl CategoryRule {
    /// The category of `stream`, if it has one.
    pub fn category<'a>(&self, stream: &'a str) -> Option<&'a str> {
        let at = if self.from_last {
            stream.rfind(self.separator)
        } else {
            stream.find(self.separator)
        }?;
        (at > 0).then(|| &stream[..at])
    }

    /// The form stored with the index, so that an index built under another rule (or under
    /// other listing rules: the `v2`) is rebuilt.
    pub(crate) fn encode(rule: Option<&CategoryRule>) -> Vec<u8> {
        match rule {
            None => b"off".to_vec(),
            Some(r) => format!(
                "v3:{}:{}",
                if r.from_last { "last" } else { "first" },
                r.separator
            )
            .into_bytes(),
        }
    }
}

/// One entry of a derived stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedEvent {
    /// The entry's revision in the derived stream.
    pub revision: u64,
    /// The event as written in its own stream.
    pub event: crate::types::RecordedEvent,
    /// Whether the event is still readable in its own stream (not deleted, truncated or aged
    /// out). An entry that is not may only be shown as a reference (stream and revision),
    /// never with its data.
    pub resolvable: bool,
}

/// A page of a derived stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedSlice {
    /// The entries read, in the direction read.
    pub events: Vec<DerivedEvent>,
    /// Where the next page starts; `None`: nothing more in this direction.
    pub next_revision: Option<u64>,
    /// The derived stream's last revision.
    pub last_revision: u64,
}

/// A stable identifier of the entry at `revision` of the derived stream `stream`: the same on
/// every read, after restarts and after rebuilds (servers that present entries as link events
/// use it as the link's event ID, so that acknowledgements by ID stay valid).
pub fn entry_id(stream: &str, revision: u64) -> uuid::Uuid {
    // FNV-1a of the name: fixed by its definition, unlike the standard library's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&h.to_be_bytes());
    bytes[8..].copy_from_slice(&revision.to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Whether the event of `stream` of type `event_type` is listed in `$et-<event_type>`.
pub fn listed_by_type(stream: &str, event_type: &str) -> bool {
    !stream.starts_with('$') || !event_type.starts_with('$')
}

/// Whether `stream` is a derived stream (read-only, maintained by the engine).
pub fn is_derived(stream: &str) -> bool {
    stream.starts_with(CATEGORY_PREFIX)
        || stream.starts_with(EVENT_TYPE_PREFIX)
        || stream == STREAMS_STREAM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_rule() {
        let first = CategoryRule::default();
        assert_eq!(first.category("order-1"), Some("order"));
        assert_eq!(first.category("order-1-a"), Some("order"));
        assert_eq!(first.category("order"), None);
        assert_eq!(first.category("-1"), None);
        let last = CategoryRule {
            separator: '.',
            from_last: true,
        };
        assert_eq!(last.category("shop.order.1"), Some("shop.order"));
        assert_eq!(last.category("shop"), None);
        assert_ne!(
            CategoryRule::encode(Some(&first)),
            CategoryRule::encode(Some(&last))
        );
        assert_ne!(
            CategoryRule::encode(None),
            CategoryRule::encode(Some(&first))
        );
        assert!(is_derived("$ce-order") && is_derived("$et-Placed") && !is_derived("$$x"));
        assert!(is_derived("$streams") && !is_derived("$streams-x"));
    }

    #[test]
    fn entry_ids_are_fixed_and_distinct() {
        // Fixed: a change here would invalidate every stored acknowledgement by ID.
        assert_eq!(
            entry_id("$ce-order", 7).to_string(),
            "f63ac6f2-741b-843e-8000-000000000007"
        );
        let ids: std::collections::HashSet<_> = ["$ce-order", "$ce-orders", "$et-order"]
            .iter()
            .flat_map(|s| (0..100).map(move |r| entry_id(s, r)))
            .collect();
        assert_eq!(ids.len(), 300);
        assert_eq!(entry_id("$ce-a", 1).get_version_num(), 8);
    }
}
