//! A consumer connected to a group: the messages it receives, and the acks and nacks it
//! sends back to the group's task.

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::Result;
use crate::group::{Command, Delivery, NackAction};

/// A connected consumer: the messages it receives, and its acks and nacks. Dropping it (or its
/// [`ConsumerControl`]) disconnects it; its in-flight messages go to the other consumers.
pub struct Consumer {
    pub id: u64,
    pub events: ConsumerEvents,
    pub control: ConsumerControl,
}

/// The receiving half of a [`Consumer`].
pub struct ConsumerEvents {
    pub(super) rx: mpsc::UnboundedReceiver<Result<Delivery>>,
}

impl ConsumerEvents {
    /// The next message; `None` when the consumer was disconnected (after a `stop` nack).
    /// An error ends the stream: the group was deleted or the server is shutting down.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.rx.recv().await
    }
}

/// The acking half of a [`Consumer`].
pub struct ConsumerControl {
    pub(super) id: u64,
    pub(super) tx: mpsc::UnboundedSender<Command>,
}

impl ConsumerControl {
    pub fn ack(&self, ids: Vec<Uuid>) {
        let _ = self.tx.send(Command::Ack {
            consumer: self.id,
            ids,
        });
    }

    pub fn nack(&self, ids: Vec<Uuid>, action: NackAction, reason: String) {
        let _ = self.tx.send(Command::Nack {
            consumer: self.id,
            ids,
            action,
            reason,
        });
    }
}

impl Drop for ConsumerControl {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Leave { consumer: self.id });
    }
}
