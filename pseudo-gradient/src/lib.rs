//! The pseudo-gradient, on the bottom floor: what a miner, a validator and a replay each do to the
//! difference between a window's starting checkpoint and the model a miner trained from it, with no
//! IO, no model and no wire. `digest` names every blob (Blake2b-256, the one implementation);
//! `codec` turns a pseudo-gradient and its error-feedback residual into the canonical payload and
//! back; `aggregate` clips, averages and takes the outer step; `sparse` holds one as its nonzero
//! entries; `sketch` estimates cosines from count sketches, for the copy check.

pub mod aggregate;
pub mod codec;
pub mod digest;
pub mod sketch;
pub mod sparse;

pub use digest::Digest;
pub use sparse::Sparse;
