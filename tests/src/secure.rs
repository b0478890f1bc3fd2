//! Helpers for tests against a secure server (TLS with the certificates of `strata certs dev`,
//! users on): starting one, KurrentDB-protocol channels and requests with credentials, users.

use std::path::Path;

use strata_client::EventData;
use strata_kurrentdb_proto::event_store::client::{self as kc, streams as ks, users as ku};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{tls_flags, Server};

/// A secure server on loopback with its data in `dir/data`.
pub fn secure(dir: &Path, certs: &Path, extra: &[&str]) -> Server {
    let mut args: Vec<String> = tls_flags(certs);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&dir.join("data"), &args)
}

/// A KurrentDB-protocol channel to a secure server, trusting the development CA.
pub async fn kurrent_channel(server: &Server, certs: &Path) -> Channel {
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    Endpoint::from_shared(server.https_url())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A request with Basic credentials, as KurrentDB clients send them.
pub fn as_user<T>(msg: T, user: Option<(&str, &str)>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some((u, p)) = user {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        r.metadata_mut()
            .insert("authorization", format!("Basic {token}").parse().unwrap());
    }
    r
}

/// The initial admin's credentials (accepted on loopback).
pub const ADMIN: (&str, &str) = ("admin", "changeit");

/// Creates a user through KurrentDB's `Users` service, as admin.
pub async fn create_user(ch: &Channel, login: &str, password: &str, groups: &[&str]) {
    ku::users_client::UsersClient::new(ch.clone())
        .create(as_user(
            ku::CreateReq {
                options: Some(ku::create_req::Options {
                    login_name: login.into(),
                    password: password.into(),
                    full_name: format!("{login} tester"),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
}

/// One small JSON event.
pub fn ev() -> Vec<EventData> {
    vec![EventData::json("Tested", &serde_json::json!({"x": 1})).unwrap()]
}

/// Appends one event through KurrentDB's `BatchAppend` as `user`; returns the answer.
pub async fn kurrent_append(
    ch: &Channel,
    stream: &str,
    event_type: &str,
    data: &[u8],
    user: (&str, &str),
) -> ks::BatchAppendResp {
    let batch = ks::BatchAppendReq {
        correlation_id: Some(kc::Uuid {
            value: Some(kc::uuid::Value::String(uuid::Uuid::new_v4().to_string())),
        }),
        options: Some(ks::batch_append_req::Options {
            stream_identifier: Some(kc::StreamIdentifier {
                stream_name: stream.as_bytes().to_vec().into(),
            }),
            expected_stream_position: Some(
                ks::batch_append_req::options::ExpectedStreamPosition::Any(()),
            ),
            deadline_option: None,
        }),
        proposed_messages: vec![ks::batch_append_req::ProposedMessage {
            id: Some(kc::Uuid {
                value: Some(kc::uuid::Value::String(uuid::Uuid::new_v4().to_string())),
            }),
            metadata: [
                ("type".to_owned(), event_type.to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
            .into(),
            custom_metadata: Default::default(),
            data: data.to_vec().into(),
        }],
        is_final: true,
    };
    ks::streams_client::StreamsClient::new(ch.clone())
        .batch_append(as_user(futures::stream::iter(vec![batch]), Some(user)))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
}
