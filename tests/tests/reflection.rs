//! gRPC server reflection (v1) on the real server: what `grpcurl list` and `grpcurl describe`
//! use (docs/api.md shows those commands; grpcurl itself is not installed on CI machines).

use strata_tests::{rt, Server};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

async fn ask(url: String, request: MessageRequest) -> MessageResponse {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    responses
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[test]
fn reflection_lists_and_describes_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", "no-sync"]);
    rt().block_on(async {
        let MessageResponse::ListServicesResponse(list) =
            ask(server.url(), MessageRequest::ListServices(String::new())).await
        else {
            panic!("expected a service list")
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "strata.v1.Streams",
            "strata.v1.Subscriptions",
            "strata.v1.PersistentSubscriptions",
            "strata.v1.Server",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let MessageResponse::FileDescriptorResponse(files) = ask(
            server.url(),
            MessageRequest::FileContainingSymbol("strata.v1.Streams".into()),
        )
        .await
        else {
            panic!("expected file descriptors")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    });
}
