//! Generates the etcd v3 API types and gRPC stubs from `proto/`.
//!
//! protoc comes from `protoc-bin-vendored`, so no system protoc is needed.

use std::io;
use std::path::PathBuf;

fn main() -> io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    // prost-build looks protoc up through PROTOC. The build script is
    // single-threaded, so changing our own environment here is fine.
    std::env::set_var("PROTOC", protoc);

    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(io::Error::other)?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let protos = [
        root.join("mvccpb/kv.proto"),
        root.join("authpb/auth.proto"),
        root.join("etcdserverpb/rpc.proto"),
        root.join("v3lockpb/v3lock.proto"),
        root.join("v3electionpb/v3election.proto"),
        root.join("cairnpb/lease.proto"),
        root.join("cairnpb/raft.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    // The descriptors of every message, for the JSON gateway
    // (cairn-server's http/gateway), which transcodes between etcd's JSON
    // and these messages by their descriptors, as grpc-gateway does.
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(io::Error::other)?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("descriptors.bin"))
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_protos(&protos, &[root])
}
