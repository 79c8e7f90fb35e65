//! Models as flat parameter vectors. Checkpoints, pseudo-gradients and aggregation all work on one
//! `Vec<f32>` in the module's visit order, with a layout of names and shapes to check it against.
//! Names, not burn's random `ParamId`s, identify parameters across processes.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    pub name: String,
    /// The type of the module that holds the parameter (`Linear`, `Embedding`, `LayerNorm`, ...).
    pub owner: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ParamLayout {
    pub entries: Vec<ParamEntry>,
    pub total: usize,
}

struct Reader {
    path: Vec<String>,
    /// The container type of each module entered (`Struct:Linear`, `Vec`, ...).
    containers: Vec<String>,
    layout: ParamLayout,
    values: Vec<f32>,
}

impl<B: Backend> ModuleVisitor<B> for Reader {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let data = tensor.into_data().convert::<f32>();
        let values = data.as_slice::<f32>().expect("converted to f32");
        let owner = self.containers.last().map_or("", |c| c.as_str());
        self.layout.entries.push(ParamEntry {
            name: self.path.join("."),
            owner: owner.strip_prefix("Struct:").unwrap_or(owner).to_string(),
            shape,
            offset: self.values.len(),
            len: values.len(),
        });
        self.values.extend_from_slice(values);
        self.layout.total = self.values.len();
    }
}

/// All float parameters of `module`, flattened in visit order, with their layout.
pub fn read_params<B: Backend, M: Module<B>>(module: &M) -> (ParamLayout, Vec<f32>) {
    let mut reader = Reader {
        path: Vec::new(),
        containers: Vec::new(),
        layout: ParamLayout::default(),
        values: Vec::new(),
    };
    module.visit(&mut reader);
    (reader.layout, reader.values)
}

struct Writer<'a> {
    values: &'a [f32],
    offset: usize,
    /// Parameters whose tensors lie inside this range keep tracking gradients; the others are
    /// frozen (None: every tensor keeps its setting).
    trainable: Option<std::ops::Range<usize>>,
}

impl<B: Backend> ModuleMapper<B> for Writer<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let slice = &self.values[self.offset..self.offset + n];
        let trains = match &self.trainable {
            Some(range) => range.start <= self.offset && self.offset + n <= range.end,
            None => tensor.is_require_grad(),
        };
        self.offset += n;
        let mut replaced =
            Tensor::<B, D>::from_data(TensorData::new(slice.to_vec(), shape), &tensor.device());
        if trains {
            replaced = replaced.require_grad();
        }
        Param::from_mapped_value(id, replaced, mapper)
    }
}

/// Replaces every float parameter of `module` with the matching slice of `values` (visit order).
/// Panics if the lengths disagree: callers check against the layout first.
pub fn write_params<B: Backend, M: Module<B>>(module: M, values: &[f32]) -> M {
    write(module, values, None)
}

/// `write_params`, and only the tensors inside `trainable` track gradients: the others are frozen,
/// so backpropagation computes no gradient for them and an optimizer keeps no state for them.
pub fn write_params_trainable<B: Backend, M: Module<B>>(
    module: M,
    values: &[f32],
    trainable: std::ops::Range<usize>,
) -> M {
    write(module, values, Some(trainable))
}

fn write<B: Backend, M: Module<B>>(
    module: M,
    values: &[f32],
    trainable: Option<std::ops::Range<usize>>,
) -> M {
    let mut writer = Writer {
        values,
        offset: 0,
        trainable,
    };
    let module = module.map(&mut writer);
    assert_eq!(
        writer.offset,
        values.len(),
        "parameter vector does not match the model"
    );
    module
}
