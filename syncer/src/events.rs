//! Bucket event notifications: S3 tells an SQS queue about every upload and deletion, and the
//! syncer acts on the ones that concern its cluster documents at once instead of waiting for
//! the next listing. The periodic listing stays as the safety net for lost events.
//!
//! - The pure part: [`parse_message`] reads a message body (S3's own notification, the same
//!   wrapped by SNS, or an EventBridge event) into [`Record`]s; [`notice`] keeps the ones for a
//!   `<cluster>.traefik.yaml` directly under the prefix; [`Sequencers::plan`] turns a batch of
//!   [`Notice`]s into fetches and listings, dropping what the syncer already has.
//! - The I/O part: [`run_queue`] long-polls the queue, hands each batch to the sync loop, waits
//!   until it was handled and only then deletes the messages. Errors back off and never stop
//!   anything else.
//!
//! Delivery is at least once and unordered, so nothing here trusts an event's content: a
//! creation event only says "fetch this key" (the conditional GET decides, and the event's ETag
//! only saves the GET when it names the version already processed), and a deletion event only
//! asks for a listing (only listings confirm an absence).
//!
//! The parts live in `message` (reading bodies), `plan` (notices and the plan) and `queue`
//! (the SQS client and task); everything is re-exported here.

mod message;
mod plan;
mod queue;

pub use message::{Kind, Message, ParseError, Record, form_decode, parse_message};
pub use plan::{Change, Ignored, Notice, Plan, Sequencers, compare_sequencers, notice};
pub use queue::{
    Batch, MAX_MESSAGES, QueueConfig, WAIT_TIME_SECONDS, client, region_of_queue_url, run_queue,
};

#[cfg(test)]
mod tests;
