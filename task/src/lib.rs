//! Tasks and the engine that runs them: specs, the synthetic corpus, real corpus files and tables,
//! the model architectures, page assignment, training, evaluation and checkpoints. No networking,
//! no chain; what is done to a pseudo-gradient once trained is `pseudo_gradient`'s.

pub mod allocator;
pub mod architecture;
pub mod assignment;
pub mod batch;
pub mod checkpoint;
pub mod corpus;
pub mod device;
pub mod engine;
pub mod export;
pub mod generate;
pub mod groups;
pub mod params;
pub mod problems;
pub mod rng;
pub mod segment;
pub mod spec;
pub mod table;
pub mod text;
pub mod trainer;

pub use batch::{Batch, Inputs, Span};
pub use checkpoint::{Checkpoint, InnerState};
pub use device::Device;
pub use engine::{Corpus, TaskEngine};
pub use pseudo_gradient::Digest;
pub use spec::TaskSpec;
pub use trainer::{CpuBackend, CpuTrainBackend, TrainOutcome, Trainer};
