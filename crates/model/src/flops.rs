//! DeepID's arithmetic per image, counted from the architecture ([`crate::geometry`]): what the
//! stages report as their work and `make bench` divides by the measured matrix-product rate to
//! give each stage's floor. A multiply-add counts as two floating-point operations; bias,
//! ReLU, pooling and the loss are left out (a few percent of the products).

use crate::geometry::{
    convolved, Conv, LayerName, CONV4_LEN, CONV_1, CONV_2, CONV_3, CONV_4, FEATURES, INPUT_HW,
    POOL3_LEN, POOL_1_HW, POOL_2_HW, POOL_3_HW,
};

/// Multiply-adds per image of one layer's forward pass.
pub fn macs(layer: LayerName, classes: usize) -> f64 {
    let conv = |input_hw, c: Conv| {
        let (h, w) = convolved(input_hw, c);
        h * w * c.outputs * c.kernel * c.kernel * c.inputs
    };
    (match layer {
        LayerName::Conv1 => conv(INPUT_HW, CONV_1),
        LayerName::Conv2 => conv(POOL_1_HW, CONV_2),
        LayerName::Conv3 => conv(POOL_2_HW, CONV_3),
        LayerName::Conv4 => conv(POOL_3_HW, CONV_4),
        LayerName::Fc1 => POOL3_LEN * FEATURES,
        LayerName::Fc2 => CONV4_LEN * FEATURES,
        LayerName::Output => FEATURES * classes,
    }) as f64
}

/// Floating-point operations per image of the forward pass through `layers`.
pub fn forward(layers: impl IntoIterator<Item = LayerName>, classes: usize) -> f64 {
    layers.into_iter().map(|l| 2.0 * macs(l, classes)).sum()
}

/// The layers from `first` up (`first` = conv_1: the whole network).
pub fn from(first: LayerName) -> impl Iterator<Item = LayerName> + Clone {
    LayerName::ALL.into_iter().filter(move |l| *l >= first)
}

/// The layers below `first`.
pub fn below(first: LayerName) -> impl Iterator<Item = LayerName> + Clone {
    LayerName::ALL.into_iter().filter(move |l| *l < first)
}

/// The three convolutions up to pool_3 (the trunk) and the layers above it (the head).
pub fn trunk() -> impl Iterator<Item = LayerName> + Clone {
    below(LayerName::Conv4)
}

pub fn head() -> impl Iterator<Item = LayerName> + Clone {
    from(LayerName::Conv4)
}

/// Floating-point operations per image of one training step from `first`: the forward pass
/// and the weight gradients of every trained layer, and the input gradients of those above
/// `first` (nothing below it needs them).
pub fn training(first: LayerName, classes: usize) -> f64 {
    let trained = forward(from(first), classes);
    let above: f64 = from(first)
        .filter(|l| *l != first)
        .map(|l| 2.0 * macs(l, classes))
        .sum();
    2.0 * trained + above
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepid_counts() {
        // conv_1: 52 x 44 positions, 20 outputs, 4 x 4 x 3 inputs.
        assert_eq!(macs(LayerName::Conv1, 10), 2_196_480.0);
        // conv_3: 10 x 8 positions, 60 outputs, 3 x 3 x 40 inputs.
        assert_eq!(macs(LayerName::Conv3, 10), 1_728_000.0);
        // conv_4: 4 x 3 positions, 80 outputs, 2 x 2 x 60 inputs.
        assert_eq!(macs(LayerName::Conv4, 10), 230_400.0);
        assert_eq!(macs(LayerName::Output, 1283), 205_280.0);
        let all = forward(LayerName::ALL, 1283);
        assert_eq!(all, forward(trunk(), 1283) + forward(head(), 1283));
        assert_eq!(all, 2.0 * 8_161_760.0);
        // From conv_3: 2 x (conv_3 .. output) + (conv_4 .. output) multiply-adds, doubled.
        let above = 230_400.0 + 192_000.0 + 153_600.0 + 205_280.0;
        assert_eq!(
            training(LayerName::Conv3, 1283),
            2.0 * (2.0 * (1_728_000.0 + above) + above)
        );
    }
}
