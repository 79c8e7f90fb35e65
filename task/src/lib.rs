//! Tasks and the engine that runs them: specs, the synthetic corpus, real corpus files and tables,
//! the model architectures, page assignment, training, evaluation, checkpoints and aggregation. No
//! networking, no chain.

pub mod aggregate;
pub mod architecture;
pub mod assignment;
pub mod checkpoint;
pub mod corpus;
pub mod device;
pub mod engine;
pub mod groups;
pub mod params;
pub mod rng;
pub mod spec;
pub mod table;
pub mod text;

pub use checkpoint::Checkpoint;
pub use device::Device;
pub use engine::{
    Batch, CpuBackend, CpuTrainBackend, Inputs, Span, TaskEngine, TrainOutcome, Trainer,
};
pub use spec::TaskSpec;
