//! Where a miner trains and a validator evaluates: the CPU (always), or a GPU when the program was
//! built with the `cuda` or `wgpu` feature. Replays run on the CPU by default, whose results are
//! reproducible; a record names the backend it was measured on, and bits are compared only on the
//! same one.

use crate::assignment::AssignmentError;
use crate::batch::Batch;
use crate::engine::TaskEngine;
use crate::segment::TrainState;
use crate::trainer::TrainOutcome;
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
    /// The backend a commitment names for a window trained here: the CPU's names this host's
    /// arithmetic (`cpu_backend`), so that an audit compares bits only where they can agree.
    pub fn backend(self) -> String {
        match self {
            Device::Cpu => cpu_backend().to_string(),
            #[allow(unreachable_patterns)]
            other => other.to_string(),
        }
    }

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

/// Runs `$body` with `$infer` and `$train` naming the inference and training backends of
/// `$device`, and `$dev` its burn device.
macro_rules! on_backend {
    ($device:expr, $infer:ident, $train:ident, $dev:ident => $body:expr) => {
        match $device {
            $crate::Device::Cpu => {
                #[allow(dead_code)]
                type $infer = $crate::CpuBackend;
                #[allow(dead_code)]
                type $train = $crate::CpuTrainBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::Device::Cuda(index) => {
                #[allow(dead_code)]
                type $infer = burn::backend::Cuda;
                #[allow(dead_code)]
                type $train = burn::backend::Autodiff<burn::backend::Cuda>;
                let $dev = burn::backend::cuda::CudaDevice { index };
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::Device::Wgpu => {
                #[allow(dead_code)]
                type $infer = burn::backend::Wgpu;
                #[allow(dead_code)]
                type $train = burn::backend::Autodiff<burn::backend::Wgpu>;
                let $dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
                $body
            }
        }
    };
}

pub(crate) use on_backend;

impl Device {
    /// `engine.train_window` on this device.
    #[allow(clippy::too_many_arguments)]
    pub fn train_window(
        self,
        engine: &TaskEngine,
        start: &[f32],
        carried: Option<&std::sync::Arc<crate::InnerState>>,
        window: u64,
        window_seed: u64,
        uid: u16,
        trainable: std::ops::Range<usize>,
        on_step: impl FnMut(usize, f32),
    ) -> Result<TrainOutcome, AssignmentError> {
        let who = (window, window_seed, uid);
        self.train_window_in_segments(engine, start, carried, who, trainable, on_step, |_| {})
    }

    /// `engine.train_window_in_segments` on this device.
    #[allow(clippy::too_many_arguments)]
    pub fn train_window_in_segments(
        self,
        engine: &TaskEngine,
        start: &[f32],
        carried: Option<&std::sync::Arc<crate::InnerState>>,
        who: (u64, u64, u16),
        trainable: std::ops::Range<usize>,
        on_step: impl FnMut(usize, f32),
        on_segment: impl FnMut(TrainState),
    ) -> Result<TrainOutcome, AssignmentError> {
        on_backend!(self, _I, T, device => engine.train_window_in_segments::<T>(
            &device, start, carried, who, trainable, on_step, on_segment,
        ))
    }

    /// `engine.losses` on this device.
    pub fn losses(self, engine: &TaskEngine, params: &[f32], batches: &[Batch]) -> Vec<f32> {
        on_backend!(self, I, _T, device => engine.losses::<I>(&device, params, batches))
    }

    /// `engine.train_reference` on this device: `(window, window_seed)`, `pages`, `seed`.
    pub fn train_reference(
        self,
        engine: &TaskEngine,
        start: &[f32],
        carried: Option<&std::sync::Arc<crate::InnerState>>,
        (window, window_seed): (u64, u64),
        pages: &[u64],
        seed: u64,
    ) -> TrainOutcome {
        on_backend!(self, _I, T, device => engine.train_reference::<T>(
            &device, start, carried, window, window_seed, pages, seed,
        ))
    }
}

/// This host's CPU arithmetic, as a backend name (`cpu:<arch>/<8 hex digits>`).
///
/// Training on burn's flex backend is bit-reproducible across processes and thread counts on one
/// host, but its matrix kernels pick their SIMD instructions when the program starts and block
/// their loops by the CPU's cache sizes, and both change the order of floating-point sums. Two
/// hosts that agree on the architecture, the instruction sets those kernels dispatch on, the
/// cache sizes and this build's kernel features get the same bits; the name digests exactly
/// that. An audit compares bits only when a window's backend equals the validator's own
/// (`cpu_backend` on its host), and compares within the task's tolerance otherwise, as for a GPU.
pub fn cpu_backend() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let digest = crate::Digest::of(cpu_arithmetic().as_bytes());
        format!(
            "cpu:{}/{}",
            std::env::consts::ARCH,
            hex::encode(&digest.0[..4])
        )
    })
}

/// Whether `backend` (as commitments and records name it) is burn's CPU backend: this build's
/// `cpu_backend`, another host's, or the bare `cpu` of records from before fingerprints.
pub fn is_cpu_backend(backend: &str) -> bool {
    backend == "cpu" || backend.starts_with("cpu:")
}

/// What `cpu_backend` digests, in words (a node logs it when it starts).
pub fn cpu_arithmetic() -> String {
    let caches = gemm_common::cache::CACHE_INFO
        .iter()
        .map(|c| c.cache_bytes.to_string())
        .collect::<Vec<_>>()
        .join("/");
    format!(
        "arch {}; instructions {}; caches {caches} bytes; kernels {}",
        std::env::consts::ARCH,
        simd_features().join("+"),
        if cfg!(target_feature = "avx512f") {
            "avx512 at build"
        } else {
            "portable build"
        }
    )
}

/// The instruction-set extensions the CPU kernels dispatch on, as detected on this host.
fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    found.push($f);
                }
            )*};
        }
        detect!(
            "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq",
            "avx512vl"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) {
                    found.push($f);
                }
            )*};
        }
        detect!("neon", "fp16", "sve");
    }
    found
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

    #[test]
    fn a_cpu_backend_names_the_host_and_fits_a_commitment() {
        let name = cpu_backend();
        assert_eq!(name, cpu_backend(), "stable within a process");
        assert!(name.starts_with(&format!("cpu:{}/", std::env::consts::ARCH)));
        assert_eq!(name.rsplit('/').next().unwrap().len(), 8);
        assert!(
            name.len() <= 32,
            "{name} is longer than a commitment's backend"
        );
        assert_eq!(Device::Cpu.backend(), name);
        assert!(cpu_arithmetic().contains("caches"));
    }
}
