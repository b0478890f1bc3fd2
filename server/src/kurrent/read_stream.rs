//! The response stream of KurrentDB `Read`: one message per event, fed either one message at a
//! time (subscriptions, whose messages come one by one) or a page at a time (reads, whose
//! events come in pages), so that a read's events reach the transport without a channel
//! hand-off per event.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use strata_kurrentdb_proto::event_store::client::streams as ks;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

pub type Item = Result<ks::ReadResp, Status>;

pub enum ReadStream {
    Items(mpsc::Receiver<Item>),
    Pages {
        rx: mpsc::Receiver<Vec<Item>>,
        page: std::vec::IntoIter<Item>,
    },
}

impl ReadStream {
    pub fn items(rx: mpsc::Receiver<Item>) -> Self {
        ReadStream::Items(rx)
    }

    pub fn pages(rx: mpsc::Receiver<Vec<Item>>) -> Self {
        ReadStream::Pages {
            rx,
            page: Vec::new().into_iter(),
        }
    }
}

impl Stream for ReadStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        match self.get_mut() {
            ReadStream::Items(rx) => rx.poll_recv(cx),
            ReadStream::Pages { rx, page } => loop {
                if let Some(item) = page.next() {
                    return Poll::Ready(Some(item));
                }
                match ready!(rx.poll_recv(cx)) {
                    Some(next) => *page = next.into_iter(),
                    None => return Poll::Ready(None),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn pages_come_out_one_message_at_a_time_in_order() {
        let (tx, rx) = mpsc::channel(1);
        let msg = |n: u64| -> Item {
            Ok(ks::ReadResp {
                content: Some(ks::read_resp::Content::LastStreamPosition(n)),
            })
        };
        tokio::spawn(async move {
            tx.send(vec![msg(1), msg(2)]).await.unwrap();
            tx.send(Vec::new()).await.unwrap();
            tx.send(vec![msg(3)]).await.unwrap();
        });
        let got: Vec<u64> = ReadStream::pages(rx)
            .map(|m| match m.unwrap().content {
                Some(ks::read_resp::Content::LastStreamPosition(n)) => n,
                _ => 0,
            })
            .collect()
            .await;
        assert_eq!(got, vec![1, 2, 3]);
    }
}
