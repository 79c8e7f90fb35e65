//! Size and rate limits shared by servers and clients.

use std::time::Duration;

/// Largest gradient payload a validator accepts (bytes).
pub const MAX_GRADIENT_BYTES: usize = 256 << 20;
/// Largest checkpoint a miner accepts (bytes).
pub const MAX_CHECKPOINT_BYTES: usize = 1 << 30;
/// Bytes per streamed chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Largest single gRPC message either side decodes.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Clock skew a receiver tolerates on signed requests.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Per-request timeout of clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
