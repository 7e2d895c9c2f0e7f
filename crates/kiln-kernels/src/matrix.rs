//! Read-only strided views of GEMM operands. Strides are in elements and may be anything,
//! including 0 (broadcast), so a transposed weight is the same slice with its strides swapped.

use crate::error::{KernelError, Result};

/// A `rows × cols` matrix inside `data`: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A view with explicit strides; fails when the last element lies outside `data`.
    pub fn new(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        check_extent(
            "matrix",
            data.len(),
            &[(rows, row_stride), (cols, col_stride)],
        )?;
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A contiguous row-major view: `data[i * cols + j]`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose, without copying: swaps the dimensions and the strides.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A batch of `rows × cols` matrices inside `data`: element `(b, i, j)` is
/// `data[b * batch_stride + i * row_stride + j * col_stride]`. A batch stride of 0 reuses
/// one matrix for every batch entry.
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) batch: usize,
    pub(crate) batch_stride: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a, T> BatchRef<'a, T> {
    /// A view with explicit strides; fails when the last element lies outside `data`.
    pub fn new(
        data: &'a [T],
        [batch, rows, cols]: [usize; 3],
        [batch_stride, row_stride, col_stride]: [usize; 3],
    ) -> Result<Self> {
        check_extent(
            "batch",
            data.len(),
            &[
                (batch, batch_stride),
                (rows, row_stride),
                (cols, col_stride),
            ],
        )?;
        Ok(BatchRef {
            data,
            batch,
            batch_stride,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// Contiguous row-major matrices one after another.
    pub fn contiguous(data: &'a [T], batch: usize, rows: usize, cols: usize) -> Result<Self> {
        let matrix = rows
            .checked_mul(cols)
            .ok_or(KernelError::Overflow { operand: "batch" })?;
        Self::new(data, [batch, rows, cols], [matrix, cols, 1])
    }

    /// Every matrix transposed, without copying.
    pub fn t(self) -> Self {
        BatchRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Checks that the element with the largest index, `Σ (len - 1) * stride`, is inside a
/// slice of `len` elements. An empty extent touches nothing and always passes.
pub(crate) fn check_extent(
    operand: &'static str,
    len: usize,
    dims: &[(usize, usize)],
) -> Result<()> {
    if dims.iter().any(|&(n, _)| n == 0) {
        return Ok(());
    }
    let mut last = 0usize;
    for &(n, stride) in dims {
        last = (n - 1)
            .checked_mul(stride)
            .and_then(|reach| last.checked_add(reach))
            .ok_or(KernelError::Overflow { operand })?;
    }
    if last >= len {
        return Err(KernelError::OutOfBounds {
            operand,
            last_index: last,
            len,
        });
    }
    Ok(())
}
