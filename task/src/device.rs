//! Where a miner trains: the CPU (always), or a GPU when the program was built with the `cuda` or
//! `wgpu` feature. Evaluation and replays always run on the CPU, whose results are reproducible.

use crate::assignment::AssignmentError;
use crate::engine::TaskEngine;
use crate::segment::TrainState;
use crate::trainer::{CpuTrainBackend, TrainOutcome};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    /// An NVIDIA GPU by index (`cuda:0`).
    #[cfg(feature = "cuda")]
    Cuda(usize),
    /// The best GPU wgpu finds (Vulkan, Metal, DirectX).
    #[cfg(feature = "wgpu")]
    Wgpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            #[cfg(feature = "wgpu")]
            Device::Wgpu => write!(f, "wgpu"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let unsupported = |feature: &str| {
            Err(format!(
                "device `{s}` needs a build with `--features {feature}` (this one has: {})",
                Device::available().join(", ")
            ))
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "wgpu" => {
                #[cfg(feature = "wgpu")]
                return Ok(Device::Wgpu);
                #[cfg(not(feature = "wgpu"))]
                return unsupported("wgpu");
            }
            _ => match s.strip_prefix("cuda") {
                Some(rest) => {
                    let index = match rest.strip_prefix(':') {
                        Some(n) => n
                            .parse::<usize>()
                            .map_err(|_| format!("`{s}`: expected cuda:N with N a GPU index"))?,
                        None if rest.is_empty() => 0,
                        None => {
                            return Err(format!("unknown device `{s}`: try cpu, cuda:0 or wgpu"));
                        }
                    };
                    #[cfg(feature = "cuda")]
                    return Ok(Device::Cuda(index));
                    #[cfg(not(feature = "cuda"))]
                    {
                        let _ = index;
                        unsupported("cuda")
                    }
                }
                None => Err(format!("unknown device `{s}`: try cpu, cuda:0 or wgpu")),
            },
        }
    }
}

impl Device {
    /// The device kinds this build supports.
    pub fn available() -> Vec<&'static str> {
        let mut out = vec!["cpu"];
        if cfg!(feature = "cuda") {
            out.push("cuda:N");
        }
        if cfg!(feature = "wgpu") {
            out.push("wgpu");
        }
        out
    }
}

impl Device {
    /// `engine.train_window` on this device.
    #[allow(clippy::too_many_arguments)]
    pub fn train_window(
        self,
        engine: &TaskEngine,
        start: &[f32],
        window: u64,
        window_seed: u64,
        uid: u16,
        trainable: std::ops::Range<usize>,
        on_step: impl FnMut(usize, f32),
    ) -> Result<TrainOutcome, AssignmentError> {
        let who = (window, window_seed, uid);
        self.train_window_in_segments(engine, start, who, trainable, on_step, |_| {})
    }

    /// `engine.train_window_in_segments` on this device.
    pub fn train_window_in_segments(
        self,
        engine: &TaskEngine,
        start: &[f32],
        who: (u64, u64, u16),
        trainable: std::ops::Range<usize>,
        on_step: impl FnMut(usize, f32),
        on_segment: impl FnMut(TrainState),
    ) -> Result<TrainOutcome, AssignmentError> {
        match self {
            Device::Cpu => engine.train_window_in_segments::<CpuTrainBackend>(
                &Default::default(),
                start,
                who,
                trainable,
                on_step,
                on_segment,
            ),
            #[cfg(feature = "cuda")]
            Device::Cuda(index) => engine
                .train_window_in_segments::<burn::backend::Autodiff<burn::backend::Cuda>>(
                    &burn::backend::cuda::CudaDevice { index },
                    start,
                    who,
                    trainable,
                    on_step,
                    on_segment,
                ),
            #[cfg(feature = "wgpu")]
            Device::Wgpu => engine
                .train_window_in_segments::<burn::backend::Autodiff<burn::backend::Wgpu>>(
                    &burn::backend::wgpu::WgpuDevice::DefaultDevice,
                    start,
                    who,
                    trainable,
                    on_step,
                    on_segment,
                ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!(Device::Cpu.to_string(), "cpu");
        assert!(
            "tpu"
                .parse::<Device>()
                .unwrap_err()
                .contains("unknown device")
        );
        assert!("cuda:x".parse::<Device>().is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(
            "cuda:0"
                .parse::<Device>()
                .unwrap_err()
                .contains("--features cuda")
        );
    }
}
