//! The index's side of the derived streams (`$ce-…`, `$et-…`, `$streams`): appending their
//! entries, and finding them by name prefix.

use super::*;

impl Index {
    /// The category rule of the derived streams, when they are kept.
    pub fn rule(&self) -> Option<&CategoryRule> {
        self.derived.as_ref()
    }

    /// The derived streams named `kind` (`$ce-`, `$et-`) followed by a key starting with
    /// `prefix`, in name order.
    pub fn derived_with_prefix(&self, kind: &str, prefix: &str) -> Vec<String> {
        let start = format!("{kind}{prefix}");
        self.derived_names
            .read()
            .expect("index lock")
            .range::<str, _>((
                std::ops::Bound::Included(start.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|n| n.starts_with(start.as_str()))
            .map(|n| n.to_string())
            .collect()
    }

    /// Appends events at `positions` to the derived stream `prefix + key` (`name` is scratch
    /// space, so that the name is allocated only for a stream's first event). Returns the
    /// stream's name when this created it.
    pub(super) fn list(
        streams: &mut HashMap<Arc<str>, StreamState>,
        name: &mut String,
        prefix: &str,
        key: &str,
        positions: &[u64],
    ) -> Option<Arc<str>> {
        name.clear();
        name.push_str(prefix);
        name.push_str(key);
        let mut created = None;
        let st = match streams.get_mut(name.as_str()) {
            Some(st) => st,
            None => {
                let n: Arc<str> = Arc::from(name.as_str());
                created = Some(n.clone());
                streams.entry(n).or_default()
            }
        };
        for &position in positions {
            let revision = st.last_revision.map_or(0, |r| r + 1);
            st.push(revision, position);
        }
        created
    }
}
