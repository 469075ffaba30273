//! Convolution for the models: im2col + GEMM forward and backward on the CPU backends.
//!
//! burn-flex's own convolution converts the whole batch to NHWC on one thread, runs GEMMs on
//! 512-column tiles and scatters the results back; its backward pass is burn's generic formulas
//! (the weight gradient alone costs ~3× the forward), and a bias is a separate broadcast add
//! whose backward costs as much as the forward. On the CPU backends ([`CpuBackend`] for
//! inference, [`CpuAutodiffBackend`] for training) [`conv2d`] instead runs, per image and in
//! parallel over the batch (rayon), GEMMs on NCHW data over tiles of output rows whose im2col
//! block fits in L2 ([`TILE_FLOATS`]):
//!
//! - forward: `yₙ[:, tile] = W [C_out, C_in·k·k] · im2col(xₙ, tile)`, onto the bias (fused);
//!   a pointwise 1×1 convolution skips the im2col;
//! - input gradient: for stride 1 and dilation 1, itself a forward convolution of the output
//!   gradient with the flipped, channel-transposed kernel ([`Geometry::transposed`]); otherwise
//!   `dcols = Wᵀ · gyₙ[:, tile]` scattered back with col2im;
//! - weight gradient: `dW = Σₙ gyₙ · colsₙᵀ`, over [`WEIGHT_GRAD_GROUPS`] fixed groups of images
//!   summed in order, so it is bit-identical whatever the thread count; bias gradient in f64.
//!
//! Asymmetric SAME padding (strided layers on odd sizes) is handled inside im2col/col2im, with no
//! padded copy of the input. The training op is a custom autodiff operation (burn's
//! backend-extension mechanism). Every other backend (CUDA) calls burn's own `Conv2d::forward`,
//! and so does a bf16/f16 tensor, padded here first where burn would pad asymmetrically
//! (burn 0.21 pads with an f32 zero tensor, whatever the input's type). The routing is a type check, so models stay generic over
//! `B: Backend`. Results match burn's reference outputs and gradients (tests below); speed is
//! measured by `cargo test --lib nn::bench::probe_conv -- --ignored --nocapture`.

use std::any::{Any, TypeId};
use std::ops::Range;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

use super::backend::{CpuAutodiffBackend, CpuBackend};

/// Apply `conv` to `x` (`[batch, c_in, h, w]` → `[batch, c_out, h_out, w_out]`), exactly as
/// `conv.forward(x)`, with the im2col + GEMM kernels on the CPU backends.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let training = TypeId::of::<B>() == TypeId::of::<CpuAutodiffBackend>();
    let inference = TypeId::of::<B>() == TypeId::of::<CpuBackend>();
    if x.dtype() != burn::tensor::DType::F32 {
        return conv2d_narrow(conv, x);
    }
    if !(training || inference) || conv.groups != 1 {
        return conv.forward(x);
    }
    let [_, c_in, h, w] = x.dims();
    let [c_out, _, kh, kw] = conv.weight.dims();
    let (pad_h, pad_w) = padding_pairs(&conv.padding, h, w, conv.kernel_size, conv.stride);
    let geometry = Geometry::new(
        c_in,
        c_out,
        [h, w],
        [kh, kw],
        conv.stride,
        (pad_h, pad_w),
        conv.dilation,
    );
    let bias = conv.bias.as_ref().map(|b| b.val());
    let y = if training {
        let (Some(xa), Some(wa)) = (
            cast::<_, Tensor<CpuAutodiffBackend, 4>>(x.clone()),
            cast::<_, Tensor<CpuAutodiffBackend, 4>>(conv.weight.val()),
        ) else {
            return conv.forward(x);
        };
        let ba = match bias.map(cast::<_, Tensor<CpuAutodiffBackend, 1>>) {
            None => None,
            Some(Some(b)) => Some(b),
            Some(None) => return conv.forward(x),
        };
        conv2d_autodiff(xa, wa, ba, geometry).and_then(cast)
    } else {
        let (Some(xc), Some(wc)) = (
            cast::<_, Tensor<CpuBackend, 4>>(x.clone()),
            cast::<_, Tensor<CpuBackend, 4>>(conv.weight.val()),
        ) else {
            return conv.forward(x);
        };
        let bc = match bias.map(cast::<_, Tensor<CpuBackend, 1>>) {
            None => None,
            Some(Some(b)) => Some(b.into_primitive().tensor()),
            Some(None) => return conv.forward(x),
        };
        let (xc, wc) = (xc.into_primitive().tensor(), wc.into_primitive().tensor());
        forward_flex(&xc, &wc, bc.as_ref(), &geometry)
            .map(float::<4>)
            .and_then(cast)
    };
    // The checks above make every cast succeed; fall back to burn if one did not.
    y.unwrap_or_else(|| conv.forward(x))
}

/// `conv` on a bf16/f16 `x` (any backend). burn 0.21 pads asymmetrically (SAME padding of a
/// strided layer on an odd size) with a zero tensor of the default float type, whatever the
/// input's, and then fails on the mismatch; so the padding is done here, in `x`'s type, and the
/// convolution runs unpadded.
fn conv2d_narrow<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let ((top, bottom), (left, right)) =
        padding_pairs(&conv.padding, h, w, conv.kernel_size, conv.stride);
    if top == bottom && left == right {
        return conv.forward(x);
    }
    let dtype = burn::tensor::FloatDType::from(x.dtype());
    let device = x.device();
    let zeros = |shape: [usize; 4]| Tensor::<B, 4>::zeros(shape, &device).cast(dtype);
    let around = |x: Tensor<B, 4>, dim: usize, before: [usize; 4], after: [usize; 4]| {
        let mut parts = Vec::with_capacity(3);
        if before[dim] > 0 {
            parts.push(zeros(before));
        }
        parts.push(x);
        if after[dim] > 0 {
            parts.push(zeros(after));
        }
        Tensor::cat(parts, dim)
    };
    let x = around(x, 2, [b, c, top, w], [b, c, bottom, w]); // [b, c, top + h + bottom, w]
    let hp = top + h + bottom;
    let x = around(x, 3, [b, c, hp, left], [b, c, hp, right]); // [b, c, hp, left + w + right]
    burn::tensor::module::conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|bias| bias.val()),
        burn::tensor::ops::ConvOptions::new(conv.stride, [0, 0], conv.dilation, conv.groups),
    ) // [b, c_out, h_out, w_out]
}

/// burn's padding rule for `Conv2d` (`PaddingConfig2d::calculate_padding_2d_pairs` is private):
/// SAME pads `(k − 1 + (⌈n/s⌉ − 1)·s + 1 − n)` in total, the smaller half first.
fn padding_pairs(
    padding: &PaddingConfig2d,
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> ((usize, usize), (usize, usize)) {
    let same = |k: usize, s: usize, n: usize| {
        let out = n.div_ceil(s);
        let total = if out > 0 {
            ((out - 1) * s + k).saturating_sub(n)
        } else {
            0
        };
        (total / 2, total - total / 2)
    };
    match padding {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Same => (same(kernel[0], stride[0], h), same(kernel[1], stride[1], w)),
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((*top, *bottom), (*left, *right)),
    }
}

/// Move a value to another type that is the same type (checked at run time).
fn cast<T: Any, U: Any>(value: T) -> Option<U> {
    let boxed: Box<dyn Any> = Box::new(value);
    boxed.downcast::<U>().ok().map(|b| *b)
}

fn float<const D: usize>(t: FlexTensor) -> Tensor<CpuBackend, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The tensor made contiguous (a copy only when it was not), so that `as_slice::<f32>()` gives
/// its values in row-major order; `None` when it does not hold f32.
fn f32_values(t: &FlexTensor) -> Option<FlexTensor> {
    let t = t.to_contiguous();
    t.as_slice::<f32>()?;
    Some(t)
}

/// Forward convolution of flex tensors, bias included; `None` when they are not f32.
fn forward_flex(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    g: &Geometry,
) -> Option<FlexTensor> {
    let (x, weight) = (f32_values(x)?, f32_values(weight)?);
    let bias = match bias {
        Some(b) => Some(f32_values(b)?),
        None => None,
    };
    let (xs, ws) = (x.as_slice::<f32>()?, weight.as_slice::<f32>()?);
    let bs = match &bias {
        Some(b) => Some(b.as_slice::<f32>()?),
        None => None,
    };
    let n = xs.len() / (g.c_in * g.h * g.w).max(1);
    let y = forward(xs, ws, bs, n, g, TILE_FLOATS);
    Some(FlexTensor::from_data(TensorData::new(
        y,
        [n, g.c_out, g.ho, g.wo],
    )))
}

/// The autodiff node of [`conv2d_autodiff`] without bias (parents x, weight) and with bias
/// (parents x, weight, bias); both remember x, the weight and the geometry.
#[derive(Debug)]
struct Conv2dBackward;

type ConvState = (NodeId, NodeId, Geometry);

impl Backward<CpuBackend, 2> for Conv2dBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<CpuBackend>(&ops.node);
        let ids = [node_x.map(|n| n.id), node_w.map(|n| n.id), None];
        conv_backward(ops.state, grad, ids, grads, cp);
    }
}

impl Backward<CpuBackend, 3> for Conv2dBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<CpuBackend>(&ops.node);
        let ids = [node_x, node_w, node_b].map(|n| n.map(|n| n.id));
        conv_backward(ops.state, grad, ids, grads, cp);
    }
}

/// Register the gradients of x, the weight and the bias (those that are tracked).
fn conv_backward(
    (x_state, w_state, g): ConvState,
    grad: FlexTensor,
    [node_x, node_w, node_b]: [Option<NodeId>; 3],
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
    let weight = checkpointer.retrieve_node_output::<FlexTensor>(w_state);
    // All were f32 in the forward (checked there), and the gradient has their dtype.
    let (Some(x), Some(weight), Some(grad)) =
        (f32_values(&x), f32_values(&weight), f32_values(&grad))
    else {
        unreachable!("conv2d_autodiff only records f32 tensors")
    };
    let (Some(xs), Some(ws), Some(gys)) = (
        x.as_slice::<f32>(),
        weight.as_slice::<f32>(),
        grad.as_slice::<f32>(),
    ) else {
        unreachable!("f32_values returns contiguous f32 tensors")
    };
    let n = xs.len() / (g.c_in * g.h * g.w).max(1);
    if let Some(node) = node_b {
        let gb = TensorData::new(bias_backward(gys, n, &g), [g.c_out]);
        grads.register::<CpuBackend>(node, FlexTensor::from_data(gb));
    }
    if let Some(node) = node_w {
        let gw = weight_backward(xs, gys, n, &g, TILE_FLOATS);
        let gw = TensorData::new(gw, [g.c_out, g.c_in, g.kh, g.kw]);
        grads.register::<CpuBackend>(node, FlexTensor::from_data(gw));
    }
    if let Some(node) = node_x {
        let gx = x_backward(gys, ws, n, &g, TILE_FLOATS);
        let gx = TensorData::new(gx, [n, g.c_in, g.h, g.w]);
        grads.register::<CpuBackend>(node, FlexTensor::from_data(gx));
    }
}

/// Convolution on the CPU autodiff backend; `None` when the tensors are not f32.
fn conv2d_autodiff(
    x: Tensor<CpuAutodiffBackend, 4>,
    weight: Tensor<CpuAutodiffBackend, 4>,
    bias: Option<Tensor<CpuAutodiffBackend, 1>>,
    g: Geometry,
) -> Option<Tensor<CpuAutodiffBackend, 4>> {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    let x = x.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let bias = bias.map(|b| b.into_primitive().tensor());
    let y = forward_flex(
        &x.primitive,
        &weight.primitive,
        bias.as_ref().map(|b| &b.primitive),
        &g,
    )?;
    // The same recording for 2 parents (x, weight) and 3 (with the bias): only N differs.
    macro_rules! record {
        ($n:literal, $parents:expr) => {
            match Backward::<CpuBackend, $n>::prepare::<NoCheckpointing>(Conv2dBackward, $parents)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&weight), g);
                    prep.finish(state, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        };
    }
    let out = match bias {
        Some(b) => record!(3, [x.node.clone(), weight.node.clone(), b.node.clone()]),
        None => record!(2, [x.node.clone(), weight.node.clone()]),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// Output size of one spatial dimension.
fn out_size(input: usize, k: usize, stride: usize, pads: (usize, usize), dilation: usize) -> usize {
    (input + pads.0 + pads.1).saturating_sub(dilation * (k - 1) + 1) / stride + 1
}

/// Geometry of one convolution, for im2col and col2im.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    stride: [usize; 2],
    /// Padding before the first row / column (the padding after only sets `ho`, `wo`).
    pad: [usize; 2],
    dilation: [usize; 2],
}

impl Geometry {
    fn new(
        c_in: usize,
        c_out: usize,
        [h, w]: [usize; 2],
        [kh, kw]: [usize; 2],
        stride: [usize; 2],
        (pad_h, pad_w): ((usize, usize), (usize, usize)),
        dilation: [usize; 2],
    ) -> Self {
        Geometry {
            c_in,
            c_out,
            h,
            w,
            kh,
            kw,
            ho: out_size(h, kh, stride[0], pad_h, dilation[0]),
            wo: out_size(w, kw, stride[1], pad_w, dilation[1]),
            stride,
            pad: [pad_h.0, pad_w.0],
            dilation,
        }
    }

    /// For stride 1 and dilation 1, the input gradient is itself a convolution: of the output
    /// gradient `[c_out, ho, wo]` with the kernel flipped in space and transposed in channels
    /// (`W'[ci, co, a, b] = W[co, ci, kh−1−a, kw−1−b]`) and the padding `k − 1 − p` on each
    /// side. Returns that kernel and geometry (whose output is `[c_in, h, w]`); `None` for other
    /// strides, dilations, or padding wider than the kernel.
    fn transposed(&self, ws: &[f32]) -> Option<(Vec<f32>, Geometry)> {
        let (top, left) = (self.pad[0], self.pad[1]);
        // Padding after, recovered from the output size: ho = h + top + bottom − kh + 1.
        let bottom = (self.ho + self.kh).checked_sub(1 + self.h + top)?;
        let right = (self.wo + self.kw).checked_sub(1 + self.w + left)?;
        if self.stride != [1, 1]
            || self.dilation != [1, 1]
            || top.max(bottom) >= self.kh
            || left.max(right) >= self.kw
        {
            return None;
        }
        let (kh, kw) = (self.kh, self.kw);
        let mut flipped = vec![0f32; ws.len()];
        for co in 0..self.c_out {
            for ci in 0..self.c_in {
                for a in 0..kh {
                    for b in 0..kw {
                        flipped[((ci * self.c_out + co) * kh + a) * kw + b] =
                            ws[((co * self.c_in + ci) * kh + (kh - 1 - a)) * kw + (kw - 1 - b)];
                    }
                }
            }
        }
        let g = Geometry::new(
            self.c_out,
            self.c_in,
            [self.ho, self.wo],
            [kh, kw],
            [1, 1],
            (
                (kh - 1 - top, kh - 1 - bottom),
                (kw - 1 - left, kw - 1 - right),
            ),
            [1, 1],
        );
        (g.ho == self.h && g.wo == self.w).then_some((flipped, g))
    }

    /// Rows of the im2col matrix: `C_in·kh·kw`.
    fn ck(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Columns of the im2col matrix: `H_out·W_out`.
    fn l(&self) -> usize {
        self.ho * self.wo
    }

    /// A 1×1, stride-1, unpadded convolution: im2col is the input itself.
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.ho == self.h
            && self.wo == self.w
    }

    /// Output positions `lo..hi` along one axis whose input index
    /// `o·stride + k·dilation − pad` falls inside `0..n`.
    fn valid(
        n: usize,
        n_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> (usize, usize) {
        let off = k * dil; // input index = o·stride + off − pad
        let lo = pad.saturating_sub(off).div_ceil(stride);
        // largest o with o·stride + off − pad ≤ n − 1
        let hi = if n + pad > off {
            ((n + pad - off - 1) / stride + 1).min(n_out)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// Visit every (input row, output row) pair of kernel tap `(ki, kj)` for the output rows
    /// `rows`: `f(src, dst, c_lo, c_hi, c0)` gets the input row's offset in the plane, the output
    /// row's offset in the block row (`(oh − rows.start)·wo`), the valid output columns and the
    /// first input column.
    fn for_each_row(
        &self,
        ki: usize,
        kj: usize,
        rows: &Range<usize>,
        mut f: impl FnMut(usize, usize, usize, usize, usize),
    ) {
        let (s0, s1) = (self.stride[0], self.stride[1]);
        let (r_lo, r_hi) = Self::valid(self.h, self.ho, ki, s0, self.pad[0], self.dilation[0]);
        let (c_lo, c_hi) = Self::valid(self.w, self.wo, kj, s1, self.pad[1], self.dilation[1]);
        if c_lo >= c_hi {
            return;
        }
        let c0 = c_lo * s1 + kj * self.dilation[1] - self.pad[1];
        for oh in r_lo.max(rows.start)..r_hi.min(rows.end) {
            let r = oh * s0 + ki * self.dilation[0] - self.pad[0];
            f(r * self.w, (oh - rows.start) * self.wo, c_lo, c_hi, c0);
        }
    }

    /// Output rows `rows` of one input plane `[h, w]` → its im2col block
    /// `[kh·kw, rows.len()·wo]`.
    fn im2col_plane(&self, plane: &[f32], rows: &Range<usize>, block: &mut [f32]) {
        let (wo, s0, s1) = (self.wo, self.stride[0], self.stride[1]);
        let l = rows.len() * wo;
        for ki in 0..self.kh {
            let (r_lo, r_hi) = Self::valid(self.h, self.ho, ki, s0, self.pad[0], self.dilation[0]);
            for kj in 0..self.kw {
                let (c_lo, c_hi) = Self::valid(self.w, wo, kj, s1, self.pad[1], self.dilation[1]);
                let row = &mut block[(ki * self.kw + kj) * l..][..l];
                // Each output row once: zeros where the tap falls in the padding, a copy of the
                // input row elsewhere (no full zero-fill first: this loop is the im2col's cost).
                for oh in rows.clone() {
                    let out = &mut row[(oh - rows.start) * wo..][..wo];
                    if oh < r_lo || oh >= r_hi || c_lo >= c_hi {
                        out.fill(0.0);
                        continue;
                    }
                    out[..c_lo].fill(0.0);
                    out[c_hi..].fill(0.0);
                    let r = oh * s0 + ki * self.dilation[0] - self.pad[0];
                    let c0 = c_lo * s1 + kj * self.dilation[1] - self.pad[1];
                    let src = &plane[r * self.w..][..self.w];
                    let dst = &mut out[c_lo..c_hi];
                    if s1 == 1 {
                        dst.copy_from_slice(&src[c0..][..dst.len()]);
                    } else {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = src[c0 + i * s1];
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col_plane`]: adds the im2col block `[kh·kw, rows.len()·wo]` of
    /// output rows `rows` back onto its input plane `[h, w]`.
    fn col2im_plane(&self, block: &[f32], rows: &Range<usize>, plane: &mut [f32]) {
        let l = rows.len() * self.wo;
        let s1 = self.stride[1];
        for ki in 0..self.kh {
            for kj in 0..self.kw {
                let row = &block[(ki * self.kw + kj) * l..][..l];
                self.for_each_row(ki, kj, rows, |src, dst, c_lo, c_hi, c0| {
                    let from = &row[dst + c_lo..dst + c_hi];
                    if s1 == 1 {
                        let to = &mut plane[src + c0..][..from.len()];
                        to.iter_mut().zip(from).for_each(|(t, f)| *t += f);
                    } else {
                        for (i, f) in from.iter().enumerate() {
                            plane[src + c0 + i * s1] += f;
                        }
                    }
                });
            }
        }
    }

    /// im2col of output rows `rows` of one image `[c_in, h, w]` into `cols`
    /// `[ck, rows.len()·wo]`.
    fn im2col(&self, image: &[f32], rows: &Range<usize>, cols: &mut [f32]) {
        let (hw, kl) = (self.h * self.w, self.kh * self.kw * rows.len() * self.wo);
        for c in 0..self.c_in {
            self.im2col_plane(&image[c * hw..][..hw], rows, &mut cols[c * kl..][..kl]);
        }
    }

    /// col2im of the block `dcols` `[ck, rows.len()·wo]` of output rows `rows`, added onto the
    /// image gradient `[c_in, h, w]`.
    fn col2im(&self, dcols: &[f32], rows: &Range<usize>, image: &mut [f32]) {
        let (hw, kl) = (self.h * self.w, self.kh * self.kw * rows.len() * self.wo);
        for c in 0..self.c_in {
            self.col2im_plane(&dcols[c * kl..][..kl], rows, &mut image[c * hw..][..hw]);
        }
    }

    /// Output rows per tile: as many as fit `tile` floats of im2col block, at least one.
    fn rows_per_tile(&self, tile: usize) -> usize {
        (tile / (self.ck() * self.wo).max(1)).clamp(1, self.ho.max(1))
    }

    /// Columns of the largest tile's im2col block.
    fn tile_len(&self, tile: usize) -> usize {
        self.rows_per_tile(tile) * self.wo
    }

    /// The output rows split into tiles whose im2col block stays within `tile` floats (at
    /// least one row per tile): the block is written and read back while it is in cache.
    fn row_tiles(&self, tile: usize) -> impl Iterator<Item = Range<usize>> + use<> {
        let per_tile = self.rows_per_tile(tile);
        let ho = self.ho;
        (0..ho.div_ceil(per_tile)).map(move |t| t * per_tile..((t + 1) * per_tile).min(ho))
    }
}

/// Size of an im2col tile in floats (512 KiB, one Zen 3 L2 cache).
pub(crate) const TILE_FLOATS: usize = 128 * 1024;

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, each operand a slice with explicit row/column strides.
/// Checks that every index the product touches lies inside its slice, then calls `gemm`
/// single-threaded (the callers parallelise over images).
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        dst.len() > last(m, n, dst_rs, dst_cs),
        "gemm: dst too small"
    );
    assert!(
        lhs.len() > last(m, k, lhs_rs, lhs_cs),
        "gemm: lhs too small"
    );
    assert!(
        rhs.len() > last(k, n, rhs_rs, rhs_cs),
        "gemm: rhs too small"
    );
    // SAFETY: the asserts above bound every element gemm reads or writes inside the slices;
    // `dst` is borrowed mutably and does not alias `lhs` or `rhs` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Forward: `y [n, c_out, ho, wo]` from `x [n, c_in, h, w]` and `w [c_out, c_in, kh, kw]`.
/// Per image and per tile of output rows, `y[:, tile] = W [c_out, ck] · im2col(x, tile)`;
/// images in parallel (each writes only its own output).
fn forward(
    xs: &[f32],
    ws: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    g: &Geometry,
    tile: usize,
) -> Vec<f32> {
    let (l, ck, hw) = (g.l(), g.ck(), g.h * g.w);
    let mut y = vec![0f32; n * g.c_out * l];
    if l == 0 {
        return y;
    }
    let pointwise = g.pointwise();
    y.par_chunks_mut(g.c_out * l).enumerate().for_each_init(
        || vec![0f32; if pointwise { 0 } else { ck * g.tile_len(tile) }],
        |cols, (img, y_img)| {
            // The bias first; the GEMMs accumulate onto it.
            if let Some(bias) = bias {
                for (row, b) in y_img.chunks_mut(l).zip(bias) {
                    row.fill(*b);
                }
            }
            let image = &xs[img * g.c_in * hw..][..g.c_in * hw];
            if pointwise {
                gemm_f32(
                    y_img,
                    (l, 1),
                    true,
                    (g.c_out, l, ck),
                    ws,
                    (ck, 1),
                    image,
                    (l, 1),
                );
                return;
            }
            for rows in g.row_tiles(tile) {
                let t = rows.len() * g.wo;
                g.im2col(image, &rows, cols);
                // y[:, tile] [c_out, t] = W [c_out, ck] · cols [ck, t]
                let dst = &mut y_img[rows.start * g.wo..];
                gemm_f32(
                    dst,
                    (l, 1),
                    true,
                    (g.c_out, t, ck),
                    ws,
                    (ck, 1),
                    cols,
                    (t, 1),
                );
            }
        },
    );
    y
}

/// dL/dx `[n, c_in, h, w]`. Stride 1: [`Geometry::transposed`]'s forward convolution. Otherwise,
/// per image and tile of output rows, `dcols [ck, t] = Wᵀ [ck, c_out] · gy[:, tile]`, then
/// col2im; images in parallel (each writes only its own gradient).
fn x_backward(gys: &[f32], ws: &[f32], n: usize, g: &Geometry, tile: usize) -> Vec<f32> {
    // Stride 1 (1×1 layers included): a forward convolution, no col2im.
    if let Some((flipped, g_t)) = g.transposed(ws) {
        return forward(gys, &flipped, None, n, &g_t, tile);
    }
    let (l, ck, hw) = (g.l(), g.ck(), g.h * g.w);
    let mut dx = vec![0f32; n * g.c_in * hw];
    if l == 0 {
        return dx;
    }
    dx.par_chunks_mut(g.c_in * hw).enumerate().for_each_init(
        || vec![0f32; ck * g.tile_len(tile)],
        |dcols, (img, dx_img)| {
            let gy = &gys[img * g.c_out * l..][..g.c_out * l];
            for rows in g.row_tiles(tile) {
                let t = rows.len() * g.wo;
                let gy = &gy[rows.start * g.wo..];
                // dcols [ck, t] = Wᵀ [ck, c_out] · gy[:, tile] [c_out, t]
                let (w_t, gy_v) = ((1, ck), (l, 1));
                gemm_f32(dcols, (t, 1), false, (ck, t, g.c_out), ws, w_t, gy, gy_v);
                g.col2im(dcols, &rows, dx_img);
            }
        },
    );
    dx
}

/// dL/db `[c_out]`: the output gradient summed over images and positions (in f64, in a fixed
/// order: deterministic), channels in parallel.
fn bias_backward(gys: &[f32], n: usize, g: &Geometry) -> Vec<f32> {
    let l = g.l();
    (0..g.c_out)
        .into_par_iter()
        .map(|c| {
            (0..n)
                .map(|img| {
                    let row = &gys[(img * g.c_out + c) * l..][..l];
                    row.iter().map(|v| f64::from(*v)).sum::<f64>()
                })
                .sum::<f64>() as f32
        })
        .collect()
}

/// Image groups of the weight gradient (more groups than cores keeps every core busy).
const WEIGHT_GRAD_GROUPS: usize = 16;

/// dL/dW `[c_out, c_in, kh, kw]`: `Σₙ gyₙ [c_out, L] · im2col(xₙ)ᵀ [L, ck]`, per tile of output
/// rows. Parallel over [`WEIGHT_GRAD_GROUPS`] fixed groups of images, each with its own im2col
/// buffer, summed in group order: the result does not depend on the number of threads or on
/// scheduling (training stays bit-reproducible on CPU).
fn weight_backward(xs: &[f32], gys: &[f32], n: usize, g: &Geometry, tile: usize) -> Vec<f32> {
    let (l, ck, hw) = (g.l(), g.ck(), g.h * g.w);
    let per_group = n.div_ceil(WEIGHT_GRAD_GROUPS).max(1);
    let pointwise = g.pointwise();
    let partials: Vec<Vec<f32>> = (0..n.div_ceil(per_group))
        .into_par_iter()
        .map(|group| {
            let mut acc = vec![0f32; g.c_out * ck];
            let mut cols = vec![0f32; if pointwise { 0 } else { ck * g.tile_len(tile) }];
            for img in group * per_group..((group + 1) * per_group).min(n) {
                let image = &xs[img * g.c_in * hw..][..g.c_in * hw];
                let gy = &gys[img * g.c_out * l..][..g.c_out * l];
                if pointwise {
                    gemm_f32(
                        &mut acc,
                        (ck, 1),
                        true,
                        (g.c_out, ck, l),
                        gy,
                        (l, 1),
                        image,
                        (1, l),
                    );
                    continue;
                }
                for rows in g.row_tiles(tile) {
                    let t = rows.len() * g.wo;
                    g.im2col(image, &rows, &mut cols);
                    let gy = &gy[rows.start * g.wo..];
                    // acc [c_out, ck] += gy[:, tile] [c_out, t] · colsᵀ [t, ck]
                    gemm_f32(
                        &mut acc,
                        (ck, 1),
                        true,
                        (g.c_out, ck, t),
                        gy,
                        (l, 1),
                        &cols,
                        (1, t),
                    );
                }
            }
            acc
        })
        .collect();
    let mut dw = vec![0f32; g.c_out * ck];
    for p in &partials {
        dw.iter_mut().zip(p).for_each(|(x, y)| *x += y);
    }
    dw
}

/// The probe's entry points: the kernels on flat NCHW data for a SAME 3×3 layer.
#[cfg(test)]
pub(crate) mod probe {
    use super::*;

    fn same3x3(c_in: usize, c_out: usize, h: usize, w: usize) -> Geometry {
        Geometry::new(
            c_in,
            c_out,
            [h, w],
            [3, 3],
            [1, 1],
            ((1, 1), (1, 1)),
            [1, 1],
        )
    }

    /// `(forward, x gradient, weight gradient)` wall times in ms for one call each, with im2col
    /// tiles of `tile` floats.
    pub(crate) fn time_kernels(
        xs: &[f32],
        ws: &[f32],
        [n, c_in, c_out, h, w]: [usize; 5],
        tile: usize,
    ) -> (f64, f64, f64) {
        let g = same3x3(c_in, c_out, h, w);
        let t = std::time::Instant::now();
        let y = forward(xs, ws, None, n, &g, tile);
        let f = t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        let _ = x_backward(&y, ws, n, &g, tile);
        let bx = t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        let _ = weight_backward(xs, &y, n, &g, tile);
        let bw = t.elapsed().as_secs_f64() * 1e3;
        (f, bx, bw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    type Ad = CpuAutodiffBackend;

    fn check(cfg: Conv2dConfig, x_dims: [usize; 4]) {
        let device = Default::default();
        CpuBackend::seed(&device, 7);
        let conv = cfg.init::<Ad>(&device);
        let x0 = Tensor::<CpuBackend, 4>::random(x_dims, Distribution::Normal(0.0, 1.0), &device);

        let run = |fast: bool| {
            let x = Tensor::<Ad, 4>::from_inner(x0.clone()).require_grad();
            let y = if fast {
                conv2d(&conv, x.clone())
            } else {
                conv.forward(x.clone())
            };
            // A loss with a non-uniform output gradient.
            let loss = (y.clone() * y.clone()).sum();
            let grads = loss.backward();
            let gx = x.grad(&grads).map(|t| t.into_data());
            let gw = conv.weight.grad(&grads).map(|t| t.into_data());
            let gb = conv
                .bias
                .as_ref()
                .and_then(|b| b.grad(&grads))
                .map(|t| t.into_data());
            (y.inner().into_data(), gx, gw, gb)
        };
        let (y_ref, gx_ref, gw_ref, gb_ref) = run(false);
        let (y, gx, gw, gb) = run(true);
        let tol = burn::tensor::Tolerance::<f32>::rel_abs(1e-3, 1e-3);
        y.assert_approx_eq::<f32>(&y_ref, tol);
        gx.unwrap().assert_approx_eq::<f32>(&gx_ref.unwrap(), tol);
        gw.unwrap().assert_approx_eq::<f32>(&gw_ref.unwrap(), tol);
        match (gb, gb_ref) {
            (Some(a), Some(b)) => a.assert_approx_eq::<f32>(&b, tol),
            (None, None) => {}
            _ => panic!("bias gradient present in one path only"),
        }
    }

    #[test]
    fn same_3x3_matches_burn() {
        check(
            Conv2dConfig::new([3, 5], [3, 3]).with_padding(PaddingConfig2d::Same),
            [2, 3, 7, 9],
        );
    }

    #[test]
    fn strided_asymmetric_same_matches_burn() {
        // Stride 2 on odd sizes: SAME padding is asymmetric.
        check(
            Conv2dConfig::new([2, 4], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Same),
            [3, 2, 9, 12],
        );
    }

    #[test]
    fn valid_and_1x1_and_no_bias_match_burn() {
        check(Conv2dConfig::new([2, 3], [3, 3]), [2, 2, 8, 6]);
        check(
            Conv2dConfig::new([4, 1], [1, 1]).with_bias(false),
            [2, 4, 5, 5],
        );
        check(
            Conv2dConfig::new([1, 3], [7, 7]).with_padding(PaddingConfig2d::Same),
            [2, 1, 10, 11],
        );
    }

    #[test]
    fn dilated_matches_burn() {
        check(
            Conv2dConfig::new([2, 3], [3, 3])
                .with_dilation([2, 2])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
            [2, 2, 9, 8],
        );
    }

    #[test]
    fn weight_gradient_is_bit_identical_across_thread_counts() {
        let g = Geometry::new(3, 4, [9, 11], [3, 3], [1, 1], ((1, 1), (1, 1)), [1, 1]);
        let n = 37;
        let xs: Vec<f32> = (0..n * 3 * 9 * 11)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let gys: Vec<f32> = (0..n * 4 * 9 * 11)
            .map(|i| ((i * 104_729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| weight_backward(&xs, &gys, n, &g, 300))
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn row_tiles_give_the_untiled_results() {
        // Stride 2 with asymmetric padding, 7 output rows: one row per tile vs one tile.
        let g = Geometry::new(3, 4, [13, 11], [3, 3], [2, 2], ((1, 1), (0, 1)), [1, 1]);
        let n = 3;
        let xs: Vec<f32> = (0..n * 3 * 13 * 11)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let ws: Vec<f32> = (0..4 * 27)
            .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let bias = [0.5, -0.25, 0.0, 1.0];
        assert_eq!(g.rows_per_tile(1), 1);
        assert_eq!(g.row_tiles(1).count(), g.ho);
        let close = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
        };
        let y1 = forward(&xs, &ws, Some(&bias), n, &g, 1);
        close(&y1, &forward(&xs, &ws, Some(&bias), n, &g, usize::MAX));
        close(
            &x_backward(&y1, &ws, n, &g, 1),
            &x_backward(&y1, &ws, n, &g, usize::MAX),
        );
        close(
            &weight_backward(&xs, &y1, n, &g, 1),
            &weight_backward(&xs, &y1, n, &g, usize::MAX),
        );
    }

    #[test]
    fn inference_forward_matches_burn() {
        let device = Default::default();
        CpuBackend::seed(&device, 11);
        for (cfg, dims) in [
            (
                Conv2dConfig::new([3, 5], [3, 3]).with_padding(PaddingConfig2d::Same),
                [2, 3, 7, 9],
            ),
            (
                Conv2dConfig::new([2, 4], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Same),
                [3, 2, 9, 12],
            ),
            (Conv2dConfig::new([4, 2], [1, 1]), [2, 4, 5, 6]),
        ] {
            let conv = cfg.init::<CpuBackend>(&device);
            let x = Tensor::<CpuBackend, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
            let tol = burn::tensor::Tolerance::<f32>::rel_abs(1e-4, 1e-4);
            conv2d(&conv, x.clone())
                .into_data()
                .assert_approx_eq::<f32>(&conv.forward(x).into_data(), tol);
        }
    }
}

#[cfg(test)]
mod probe_gemm {
    use super::gemm_f32;

    fn time(label: &str, flops: f64, mut f: impl FnMut()) {
        f();
        let t = std::time::Instant::now();
        let reps = 20;
        for _ in 0..reps {
            f();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        eprintln!("{label}: {:.2} ms {:.1} GFLOP/s", s * 1e3, flops / s / 1e9);
    }

    /// `cargo test --lib nn::conv::probe_gemm -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement probe, run by hand (see its doc comment)"]
    fn probe_gemm() {
        let (co, ck, l) = (64, 576, 1925);
        let flops = 2.0 * (co * ck * l) as f64;
        let w: Vec<f32> = (0..co * ck).map(|i| (i % 13) as f32 * 0.1).collect();
        let cols: Vec<f32> = (0..ck * l).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut y = vec![0f32; co * l];
        for _ in 0..2 {
            time("fwd A  y[co,L] = W[co,ck] cols[ck,L]", flops, || {
                gemm_f32(
                    &mut y,
                    (l, 1),
                    false,
                    (co, l, ck),
                    &w,
                    (ck, 1),
                    &cols,
                    (l, 1),
                )
            });
            time("fwd B  yT[L,co] = colsT W^T", flops, || {
                gemm_f32(
                    &mut y,
                    (1, l),
                    false,
                    (l, co, ck),
                    &cols,
                    (1, l),
                    &w,
                    (1, ck),
                )
            });
            // cols stored transposed: [L, ck]
            time("fwd C  yT[L,co] = colsT(row-major) W^T", flops, || {
                gemm_f32(
                    &mut y,
                    (1, l),
                    false,
                    (l, co, ck),
                    &cols,
                    (ck, 1),
                    &w,
                    (1, ck),
                )
            });
            time("fwd D  y = W colsT(row-major)^T", flops, || {
                gemm_f32(
                    &mut y,
                    (l, 1),
                    false,
                    (co, l, ck),
                    &w,
                    (ck, 1),
                    &cols,
                    (1, ck),
                )
            });
            let mut dcols = vec![0f32; ck * l];
            time("xgrad A dcols[ck,L] = W^T gy", flops, || {
                gemm_f32(
                    &mut dcols,
                    (l, 1),
                    false,
                    (ck, l, co),
                    &w,
                    (1, ck),
                    &y,
                    (l, 1),
                )
            });
            time("xgrad B dcolsT[L,ck] = gyT W", flops, || {
                gemm_f32(
                    &mut dcols,
                    (1, l),
                    false,
                    (l, ck, co),
                    &y,
                    (1, l),
                    &w,
                    (ck, 1),
                )
            });
            let mut acc = vec![0f32; co * ck];
            time("wgrad A acc[co,ck] += gy colsT", flops, || {
                gemm_f32(
                    &mut acc,
                    (ck, 1),
                    true,
                    (co, ck, l),
                    &y,
                    (l, 1),
                    &cols,
                    (1, l),
                )
            });
            time("wgrad B accT[ck,co] += cols gyT", flops, || {
                gemm_f32(
                    &mut acc,
                    (1, ck),
                    true,
                    (ck, co, l),
                    &cols,
                    (l, 1),
                    &y,
                    (1, l),
                )
            });
        }
    }
}
