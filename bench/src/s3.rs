//! Uploads to the S3 server the syncer benchmarks run against, as an exporter would.

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;

/// One PUT of a cluster document: `bytes` at `key` in `bucket`.
pub async fn upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/yaml")
        .body(ByteStream::from(bytes))
        .send()
        .await
        .with_context(|| format!("uploading {key}"))?;
    Ok(())
}
