//! A history checker for cluster tests: every client operation is recorded with the time it
//! was invoked and the time its answer arrived, and [`History::check`] holds the recorded
//! answers against the log every node ends with:
//!
//! - every acknowledged append is in the final log exactly once, at the revision and position
//!   it was acknowledged with, and at the revision its expected revision allowed;
//! - an append refused for certain (e.g. a wrong expected revision) is not in the log, and an
//!   append whose outcome is unknown (timeout, leader change) is there at most once;
//! - nothing is in the log that no client appended;
//! - acknowledged appends are in real-time order: if one was acknowledged before another was
//!   invoked, it has the lower position (and so, on one stream, the lower revision);
//! - every event a read returned is in the final log where the read saw it (no read saw a
//!   write that was later lost), and a read of a stream saw a prefix of it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_client::ExpectedRevision;
use uuid::Uuid;

/// An event as a read or the final log shows it: stream, revision, position, ID.
pub type Seen = (String, u64, u64, Uuid);

/// How an append ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Acknowledged by `node` at this revision and position.
    Acked {
        revision: u64,
        position: u64,
        node: u64,
    },
    /// Refused for certain: nothing was written.
    Refused(String),
    /// No answer that tells (timeouts, UNAVAILABLE, a lost connection).
    Unknown(String),
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: String,
        expected: ExpectedRevision,
        id: Uuid,
        outcome: Outcome,
    },
    Read {
        stream: String,
        node: u64,
        events: Vec<Seen>,
        /// Served by a leader that confirmed its leadership (`requires-leader`): it must see
        /// every append acknowledged before it was invoked.
        linearizable: bool,
    },
}

#[derive(Clone, Debug)]
struct Timed {
    invoked: Duration,
    completed: Duration,
    op: Op,
}

/// Counts of what a checked history held.
#[derive(Debug, Default)]
pub struct Summary {
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    pub unknown_present: usize,
    pub reads: usize,
    pub leader_reads: usize,
}

/// The operations of one test run, from any number of tasks.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Timed>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            ops: Mutex::default(),
        }
    }
}

impl History {
    /// The invocation time of an operation about to start.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a single-event append invoked at `invoked`, ending now with `outcome`.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        id: Uuid,
        invoked: Duration,
        outcome: Outcome,
    ) {
        self.push(
            invoked,
            Op::Append {
                stream: stream.to_owned(),
                expected,
                id,
                outcome,
            },
        );
    }

    /// Records a read of a whole stream from `node`, invoked at `invoked`, answered now.
    pub fn read(&self, stream: &str, node: u64, invoked: Duration, events: Vec<Seen>) {
        self.push(
            invoked,
            Op::Read {
                stream: stream.to_owned(),
                node,
                events,
                linearizable: false,
            },
        );
    }

    /// Records a read of a whole stream that a leader served after confirming it leads.
    pub fn read_from_leader(&self, stream: &str, node: u64, invoked: Duration, events: Vec<Seen>) {
        self.push(
            invoked,
            Op::Read {
                stream: stream.to_owned(),
                node,
                events,
                linearizable: true,
            },
        );
    }

    fn push(&self, invoked: Duration, op: Op) {
        let completed = self.now();
        self.ops.lock().unwrap().push(Timed {
            invoked,
            completed,
            op,
        });
    }

    /// Appends acknowledged so far.
    pub fn acked(&self) -> usize {
        self.ops
            .lock()
            .unwrap()
            .iter()
            .filter(|t| {
                matches!(
                    &t.op,
                    Op::Append {
                        outcome: Outcome::Acked { .. },
                        ..
                    }
                )
            })
            .count()
    }

    /// Acknowledgements from `node` for appends invoked at or after `since`.
    pub fn acked_by_since(&self, node: u64, since: Duration) -> usize {
        self.ops
            .lock()
            .unwrap()
            .iter()
            .filter(|t| {
                t.invoked >= since
                    && matches!(&t.op, Op::Append { outcome: Outcome::Acked { node: n, .. }, .. } if *n == node)
            })
            .count()
    }

    /// Checks the history against `log`, the `$all` every node ends with. Returns every
    /// violation found (at most 20 are listed).
    pub fn check(&self, log: &[Seen]) -> Result<Summary, String> {
        let ops = self.ops.lock().unwrap().clone();
        let mut bad = Vec::new();
        let mut summary = Summary::default();

        // The log itself: unique IDs, dense revisions, increasing positions.
        let mut at: HashMap<Uuid, &Seen> = HashMap::new();
        let mut next_rev: HashMap<&str, u64> = HashMap::new();
        for (i, e) in log.iter().enumerate() {
            if at.insert(e.3, e).is_some() {
                bad.push(format!("event {} is in the log twice", e.3));
            }
            let n = next_rev.entry(e.0.as_str()).or_default();
            if e.1 != *n {
                bad.push(format!("{} has revision {} where {} was next", e.0, e.1, n));
            }
            *n = e.1 + 1;
            if i > 0 && log[i - 1].2 >= e.2 {
                bad.push(format!("positions do not increase at {}", e.2));
            }
        }

        let mut appended = HashSet::new();
        let mut acked: Vec<(Duration, Duration, u64)> = Vec::new();
        // Per stream: (completed, revision) of acknowledged appends.
        let mut acked_on: HashMap<&str, Vec<(Duration, u64)>> = HashMap::new();
        for t in &ops {
            if let Op::Append {
                stream,
                outcome: Outcome::Acked { revision, .. },
                ..
            } = &t.op
            {
                acked_on
                    .entry(stream.as_str())
                    .or_default()
                    .push((t.completed, *revision));
            }
        }
        for t in &ops {
            match &t.op {
                Op::Append {
                    stream,
                    expected,
                    id,
                    outcome,
                } => {
                    appended.insert(*id);
                    match outcome {
                        Outcome::Acked {
                            revision,
                            position,
                            node,
                        } => {
                            summary.acked += 1;
                            acked.push((t.invoked, t.completed, *position));
                            let want = (stream.clone(), *revision, *position, *id);
                            match at.get(id) {
                                Some(got) if **got == want => {}
                                got => bad.push(format!(
                                    "append {id} to {stream} was acknowledged by node {node} at revision {revision}, position {position}; the log has {got:?}"
                                )),
                            }
                            let allowed = match expected {
                                ExpectedRevision::Exact(r) => Some(r + 1),
                                ExpectedRevision::NoStream => Some(0),
                                _ => None,
                            };
                            if allowed.is_some_and(|r| r != *revision) {
                                bad.push(format!(
                                    "append {id} to {stream} expected {expected} but was acknowledged at revision {revision}"
                                ));
                            }
                        }
                        Outcome::Refused(why) => {
                            summary.refused += 1;
                            if let Some(e) = at.get(id) {
                                bad.push(format!(
                                    "append {id} to {stream} was refused ({why}) yet the log has it: {e:?}"
                                ));
                            }
                        }
                        Outcome::Unknown(_) => {
                            summary.unknown += 1;
                            summary.unknown_present += at.contains_key(id) as usize;
                        }
                    }
                }
                Op::Read {
                    stream,
                    node,
                    events,
                    linearizable,
                } => {
                    summary.reads += 1;
                    if *linearizable {
                        summary.leader_reads += 1;
                        let missed = acked_on.get(stream.as_str()).and_then(|acks| {
                            acks.iter()
                                .filter(|(done, rev)| {
                                    *done < t.invoked && *rev >= events.len() as u64
                                })
                                .max_by_key(|(_, rev)| *rev)
                        });
                        if let Some((done, rev)) = missed {
                            bad.push(format!(
                                "a leader read of {stream} from node {node} invoked at {:?} saw {} events, missing revision {rev} acknowledged at {done:?}",
                                t.invoked,
                                events.len()
                            ));
                        }
                    }
                    for (i, e) in events.iter().enumerate() {
                        if e.1 != i as u64 || at.get(&e.3) != Some(&e) || e.0 != *stream {
                            bad.push(format!(
                                "a read of {stream} from node {node} saw {e:?} as its event {i}; the log has {:?}",
                                at.get(&e.3)
                            ));
                            break;
                        }
                    }
                }
            }
        }
        for e in log {
            if !appended.contains(&e.3) {
                bad.push(format!("the log has {e:?}, which no client appended"));
            }
        }

        // Real time: an append acknowledged before another was invoked has the lower position.
        let mut by_completion = acked.clone();
        by_completion.sort_by_key(|a| a.1);
        acked.sort_by_key(|a| a.0);
        let mut done = 0;
        let mut highest: Option<(u64, Duration)> = None;
        for (invoked, _, position) in &acked {
            while done < by_completion.len() && by_completion[done].1 < *invoked {
                let p = by_completion[done].2;
                if highest.is_none_or(|(h, _)| p > h) {
                    highest = Some((p, by_completion[done].1));
                }
                done += 1;
            }
            if let Some((h, when)) = highest {
                if h >= *position {
                    bad.push(format!(
                        "an append invoked at {invoked:?} was acknowledged at position {position}, not after position {h}, acknowledged earlier (at {when:?})"
                    ));
                }
            }
        }

        if bad.is_empty() {
            Ok(summary)
        } else {
            let n = bad.len();
            bad.truncate(20);
            Err(format!("{n} violations:\n{}", bad.join("\n")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Uuid {
        Uuid::from_u64_pair(7, n)
    }

    fn acked(h: &History, stream: &str, n: u64, rev: u64, pos: u64, invoked: Duration) {
        let expected = match rev {
            0 => ExpectedRevision::NoStream,
            r => ExpectedRevision::Exact(r - 1),
        };
        h.append(
            stream,
            expected,
            id(n),
            invoked,
            Outcome::Acked {
                revision: rev,
                position: pos,
                node: 1,
            },
        );
    }

    #[test]
    fn a_consistent_history_passes_and_each_kind_of_violation_is_caught() {
        let h = History::default();
        acked(&h, "a", 1, 0, 10, h.now());
        acked(&h, "a", 2, 1, 20, h.now());
        h.append(
            "a",
            ExpectedRevision::Exact(0),
            id(3),
            h.now(),
            Outcome::Refused("wrong expected revision".into()),
        );
        h.append(
            "b",
            ExpectedRevision::Any,
            id(4),
            h.now(),
            Outcome::Unknown("timeout".into()),
        );
        let log: Vec<Seen> = vec![
            ("a".into(), 0, 10, id(1)),
            ("a".into(), 1, 20, id(2)),
            ("b".into(), 0, 30, id(4)),
        ];
        h.read("a", 2, h.now(), log[..1].to_vec());
        let s = h.check(&log).unwrap();
        assert_eq!(
            (s.acked, s.refused, s.unknown, s.unknown_present, s.reads),
            (2, 1, 1, 1, 1)
        );

        // A lost acknowledged append.
        assert!(h
            .check(&log[..1])
            .unwrap_err()
            .contains("acknowledged by node 1"));
        // A refused append that was written after all.
        let mut more = log.clone();
        more.push(("a".into(), 2, 40, id(3)));
        assert!(h.check(&more).unwrap_err().contains("was refused"));
        // A phantom event.
        let mut phantom = log.clone();
        phantom.push(("c".into(), 0, 50, id(99)));
        assert!(h
            .check(&phantom)
            .unwrap_err()
            .contains("no client appended"));
        // A read that saw something the log does not keep.
        h.read("a", 3, h.now(), vec![("a".into(), 0, 11, id(1))]);
        assert!(h
            .check(&log)
            .unwrap_err()
            .contains("a read of a from node 3"));
    }

    #[test]
    fn acknowledgements_out_of_real_time_order_are_caught() {
        let h = History::default();
        // Appended one after the other, but the later one got the lower position.
        acked(&h, "a", 1, 0, 20, h.now());
        std::thread::sleep(Duration::from_millis(2));
        acked(&h, "b", 2, 0, 10, h.now());
        let log: Vec<Seen> = vec![("b".into(), 0, 10, id(2)), ("a".into(), 0, 20, id(1))];
        assert!(h.check(&log).unwrap_err().contains("not after position 20"));
        // Concurrent appends may land in either order.
        let h = History::default();
        let t = h.now();
        acked(&h, "a", 1, 0, 20, t);
        acked(&h, "b", 2, 0, 10, t);
        h.check(&log).unwrap();
        // A leader read must see what was acknowledged before it; a follower's may lag.
        let h = History::default();
        acked(&h, "a", 1, 0, 10, h.now());
        std::thread::sleep(Duration::from_millis(2));
        h.read("a", 2, h.now(), vec![]);
        let log: Vec<Seen> = vec![("a".into(), 0, 10, id(1))];
        assert_eq!(h.check(&log).unwrap().leader_reads, 0);
        h.read_from_leader("a", 1, h.now(), log.clone());
        h.check(&log).unwrap();
        h.read_from_leader("a", 1, h.now(), vec![]);
        assert!(h.check(&log).unwrap_err().contains("missing revision 0"));
        // Wrong revision for the expected one.
        let h = History::default();
        h.append(
            "a",
            ExpectedRevision::Exact(4),
            id(1),
            h.now(),
            Outcome::Acked {
                revision: 0,
                position: 20,
                node: 2,
            },
        );
        assert!(h
            .check(&[("a".into(), 0, 20, id(1))])
            .unwrap_err()
            .contains("expected 4"));
    }
}
