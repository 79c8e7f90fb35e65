//! Compiles proto/subnet.proto with protox, a pure-Rust protobuf compiler, so no system protoc is
//! needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled elsewhere must not carry another checkout's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../proto");
    let file = proto_dir.join("subnet.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&proto_dir])?;
    // Streamed chunks are slices of one shared buffer, never copies of it.
    tonic_prost_build::configure()
        .bytes(".subnet.v1.GradientChunk.data")
        .bytes(".subnet.v1.CheckpointChunk.data")
        // A stream's first chunk is the commitment (with its segment digests), every later one a
        // shared slice: the variants' sizes differ by design, and chunks are never held in bulk.
        .enum_attribute(
            ".subnet.v1.GradientChunk.part",
            "#[allow(clippy::large_enum_variant)]",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
