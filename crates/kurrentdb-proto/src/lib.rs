//! The KurrentDB (EventStoreDB) client protocol v1, generated from `proto/kurrentdb/`. Strata's
//! server serves it next to its own `strata.v1` API so that existing KurrentDB clients work
//! unchanged. Module paths mirror the protobuf packages, as the generated code expects.
#![allow(clippy::all, missing_docs)]

pub mod event_store {
    pub mod client {
        tonic::include_proto!("event_store.client");

        pub mod streams {
            tonic::include_proto!("event_store.client.streams");
        }
        pub mod persistent_subscriptions {
            tonic::include_proto!("event_store.client.persistent_subscriptions");
        }
        pub mod gossip {
            tonic::include_proto!("event_store.client.gossip");
        }
        pub mod server_features {
            tonic::include_proto!("event_store.client.server_features");
        }
        pub mod users {
            tonic::include_proto!("event_store.client.users");
        }
    }
}

pub mod kurrentdb {
    pub mod protocol {
        pub mod v2 {
            pub mod streams {
                tonic::include_proto!("kurrentdb.protocol.v2.streams");

                pub mod errors {
                    tonic::include_proto!("kurrentdb.protocol.v2.streams.errors");
                }
            }
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}
