//! rtpengine ng control protocol client.
//!
//! - [`wire`]: datagram framing and guarded decoding of untrusted replies.
//! - [`request`] / [`reply`]: typed messages (with raw access for everything else).
//! - [`core`]: the sans-IO engine: cookies, retransmission, instance choice (weighted
//!   rendezvous hashing), failover, health pings, metrics.
//! - [`client`]: a thin tokio shell with one `async fn` per command.
//!
//! It knows nothing about SIP: the caller passes call-ids, tags and SDP bodies.

pub mod client;
pub mod core;
pub mod error;
pub mod hrw;
pub mod instances;
pub mod metrics;
pub mod reply;
pub mod request;
pub mod wire;

pub use bt_bencode::{ByteString, Value};
pub use client::{ClientConfig, NgClient};
pub use core::{Completion, Core, CoreConfig, OpId, Response, Target, Transmit};
pub use error::{DecodeError, NgError};
pub use instances::{Health, InstanceConfig, InstanceId, InstanceStatus};
pub use metrics::{CommandMetrics, CommandStats, Histogram, MetricsSnapshot};
pub use reply::{
    CallStats, Counters, MediaStats, Reply, ReplyResult, StreamStats, TagStats, Totals,
};
pub use request::{CallRef, CodecOptions, Command, MediaRequest, Request, SdpAttrOps};
