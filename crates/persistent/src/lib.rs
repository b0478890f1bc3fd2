//! Persistent subscriptions: consumer groups that the server coordinates. Each event of a
//! group's source (one stream, or `$all` with a filter) goes to one of the group's consumers,
//! which acknowledges it; failures are retried and finally parked for a human. Everything a
//! group needs to survive a restart lives in the log, in system streams:
//!
//! - `$persistentSubscriptionConfig`: one event per create, update and delete of a group;
//! - `$persistentsubscription-<stream>::<group>-checkpoint`: the group's checkpoint (every
//!   event before it was acknowledged, skipped or parked);
//! - `$persistentsubscription-<stream>::<group>-parked`: parked messages, each a pointer to
//!   the original event plus the reason. Acknowledged replays are trimmed with `$tb`.
//!
//! (`<stream>` and `<group>` are escaped when they could make the name ambiguous; see
//! [`checkpoint_stream`].) The server reads these streams raw, ignoring retention metadata,
//! and clients may not write them or change their metadata ([`is_group_stream`]).
//!
//! Module map:
//! - [`settings`]: a group's settings, their defaults and validation.
//! - `store`: reading and writing the system streams above.
//! - `source`: reading a group's source stream, derived streams (`$ce-`, `$et-`) included.
//! - `group`: the task that owns one group: reading, dispatching, acks, retries, checkpoints.
//! - [`memory`]: the one memory bound for all groups' buffers.
//! - [`manager`]: the registry of groups: create, update, delete, list, connect, replay.

mod error;
mod group;
pub mod manager;
pub mod memory;
pub mod settings;
mod source;
mod store;

pub use error::{Error, Result};
pub use group::{ConsumerInfo, Delivery, GroupInfo, GroupStatus, NackAction};
pub use manager::{Consumer, Groups};
pub use settings::{ConsumerStrategy, FilterSpec, Settings, SettingsPatch, StartFrom, Target};
pub use source::Listed;
pub use store::{checkpoint_stream, is_group_stream, parked_stream, CONFIG_STREAM};
