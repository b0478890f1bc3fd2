//! An event-sourced bank account: state is rebuilt from the account's stream, and a write
//! that races another is detected by the expected revision, then reloaded and retried.
//!
//! Start a server (`cargo run --release --bin strata -- serve`), then:
//! `cargo run -p strata-client --example bank_account -- http://127.0.0.1:2113`

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use strata_client::{Client, Error, EventData, ExpectedRevision, ReadOptions};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

#[derive(Debug, Default)]
struct Account {
    balance: i64,
    /// The revision the state was built from: the expected revision of the next write.
    revision: Option<u64>,
}

async fn load(client: &Client, stream: &str) -> Result<Account, Box<dyn std::error::Error>> {
    let mut account = Account::default();
    let events = match client.read_stream(stream, ReadOptions::default()).await {
        Ok(events) => events,
        Err(Error::StreamNotFound { .. }) => return Ok(account),
        Err(e) => return Err(e.into()),
    };
    let events: Vec<_> = events.try_collect().await?;
    for e in events {
        match e.json::<AccountEvent>()? {
            AccountEvent::Opened { .. } => {}
            AccountEvent::Deposited { amount } => account.balance += amount,
            AccountEvent::Withdrawn { amount } => account.balance -= amount,
        }
        account.revision = Some(e.revision);
    }
    Ok(account)
}

/// Withdraws if the balance allows, retrying when another writer got there first.
async fn withdraw(
    client: &Client,
    stream: &str,
    amount: i64,
) -> Result<bool, Box<dyn std::error::Error>> {
    loop {
        let account = load(client, stream).await?;
        if account.balance < amount {
            return Ok(false);
        }
        let expected = account
            .revision
            .map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
        let event = EventData::json("Withdrawn", &AccountEvent::Withdrawn { amount })?;
        match client.append(stream, expected, vec![event]).await {
            Ok(_) => return Ok(true),
            Err(Error::WrongExpectedRevision { actual, .. }) => {
                println!("conflict: the account moved to revision {actual:?} meanwhile; reloading");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2113".into());
    let client = Client::connect(url).await?;
    let stream = format!("account-{}", uuid::Uuid::new_v4().simple());
    client
        .append(
            &stream,
            ExpectedRevision::NoStream,
            vec![
                EventData::json(
                    "Opened",
                    &AccountEvent::Opened {
                        owner: "ada".into(),
                    },
                )?,
                EventData::json("Deposited", &AccountEvent::Deposited { amount: 100 })?,
            ],
        )
        .await?;
    // Two withdrawals race; the expected revision makes one of them reload and re-check.
    let (a, b) = tokio::join!(
        withdraw(&client, &stream, 70),
        withdraw(&client, &stream, 70)
    );
    let account = load(&client, &stream).await?;
    println!(
        "withdrawals: {:?} {:?}; final balance {} at revision {:?}",
        a?, b?, account.balance, account.revision
    );
    assert!(account.balance >= 0, "the balance never goes negative");
    Ok(())
}
