//! Errors from the safe kernel entry points. Each message is one line that names the
//! operand, what was expected and what was found.

use crate::KernelPath;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("gemm: A has {a_cols} columns but B has {b_rows} rows; they must be equal")]
    InnerDim { a_cols: usize, b_rows: usize },
    #[error("gemm: A has a batch of {a} but B has {b}; they must be equal")]
    BatchMismatch { a: usize, b: usize },
    #[error(
        "gemm: C holds {found} elements but the product needs {expected} (row-major, contiguous)"
    )]
    OutputLen { expected: usize, found: usize },
    #[error("{op}: {input} elements in but room for {output}; the slices must be equally long")]
    ElementwiseLen {
        op: &'static str,
        input: usize,
        output: usize,
    },
    #[error("f32_to_bf16: {src} f32 in but room for {dst} bf16; the slices must be equally long")]
    ConvertLen { src: usize, dst: usize },
    #[error("{operand}: its strides reach element {last_index} but the slice holds {len}")]
    OutOfBounds {
        operand: &'static str,
        last_index: usize,
        len: usize,
    },
    #[error("{operand}: its extent overflows usize; check the strides")]
    Overflow { operand: &'static str },
    #[error("kernel path {path:?} is not supported by this CPU or build; use KernelPath::best()")]
    PathUnavailable { path: KernelPath },
    #[error(
        "conv: input {input:?} (T, H, W, padding included) is smaller than the kernel {kernel:?}"
    )]
    ConvShape {
        input: (usize, usize, usize),
        kernel: (usize, usize, usize),
    },
    #[error("{operand}: holds {found} elements but the shape needs {expected}")]
    ShapeLen {
        operand: &'static str,
        expected: usize,
        found: usize,
    },
    #[error(
        "attention: {operand} holds {found} elements but the shape needs {expected} (row-major, contiguous)"
    )]
    AttentionLen {
        operand: &'static str,
        expected: usize,
        found: usize,
    },
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// `Ok` when a slice holds the `expected` number of elements, else [`KernelError::ShapeLen`].
pub(crate) fn check_len(operand: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(KernelError::ShapeLen {
            operand,
            expected,
            found,
        })
    }
}
