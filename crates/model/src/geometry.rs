//! DeepID's architecture, defined once. Every size the rest of the code uses (image size, the
//! grids after each convolution and pooling, pool_3's length, conv_4's grid, the weight shapes)
//! is derived here from the four convolutions and the width of the dense layers.
//!
//! ```text
//! input (55, 47, 3)
//!   conv_1 4x4 -> 20, 2x2 max-pool     (26, 22, 20)
//!   conv_2 3x3 -> 40, 2x2 max-pool     (12, 10, 40)
//!   conv_3 3x3 -> 60                   (10, 8, 60)   <- the layer fine-pruning prunes
//!          2x2 max-pool = pool_3       (5, 4, 60)
//!   fc_1(pool_3) + fc_2(conv_4 2x2 -> 80 (4, 3, 80)) -> ReLU (160) -> output (classes)
//! ```

/// A valid, stride-1 convolution followed (conv_1..conv_3) by ReLU and 2x2 max-pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    pub kernel: usize,
    pub inputs: usize,
    pub outputs: usize,
}

pub const CONV_1: Conv = Conv {
    kernel: 4,
    inputs: 3,
    outputs: 20,
};
pub const CONV_2: Conv = Conv {
    kernel: 3,
    inputs: 20,
    outputs: 40,
};
pub const CONV_3: Conv = Conv {
    kernel: 3,
    inputs: 40,
    outputs: 60,
};
pub const CONV_4: Conv = Conv {
    kernel: 2,
    inputs: 60,
    outputs: 80,
};
/// Width of fc_1, fc_2 and their sum (the face representation).
pub const FEATURES: usize = 160;

/// Image height and width; images are stored (C, H, W) as CSAW does.
pub const INPUT_HW: (usize, usize) = (55, 47);
pub const INPUT_SHAPE: [usize; 3] = [CONV_1.inputs, INPUT_HW.0, INPUT_HW.1];
/// Values per image.
pub const IMAGE_LEN: usize = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2];

/// Output grid of a valid convolution.
pub const fn convolved((h, w): (usize, usize), conv: Conv) -> (usize, usize) {
    (h + 1 - conv.kernel, w + 1 - conv.kernel)
}

/// Output grid of 2x2 max-pooling (an odd last row or column is dropped, as in Keras).
pub const fn pooled((h, w): (usize, usize)) -> (usize, usize) {
    (h / 2, w / 2)
}

pub const POOL_1_HW: (usize, usize) = pooled(convolved(INPUT_HW, CONV_1));
pub const POOL_2_HW: (usize, usize) = pooled(convolved(POOL_1_HW, CONV_2));
pub const CONV_3_HW: (usize, usize) = convolved(POOL_2_HW, CONV_3);
pub const POOL_3_HW: (usize, usize) = pooled(CONV_3_HW);
pub const CONV_4_HW: (usize, usize) = convolved(POOL_3_HW, CONV_4);

/// conv_3's channels: what fine-pruning ranks and removes.
pub const CONV3_CHANNELS: usize = CONV_3.outputs;
/// conv_3 and pool_3 positions per channel.
pub const CONV3_POSITIONS: usize = CONV_3_HW.0 * CONV_3_HW.1;
pub const POOL3_POSITIONS: usize = POOL_3_HW.0 * POOL_3_HW.1;
/// pool_3 values per image, NHWC order.
pub const POOL3_LEN: usize = POOL3_POSITIONS * CONV3_CHANNELS;
/// conv_4 values per image, NHWC order.
pub const CONV4_LEN: usize = CONV_4_HW.0 * CONV_4_HW.1 * CONV_4.outputs;

/// The layers that carry weights, in forward order; in settings by their Keras names, a
/// misspelt one an error.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum LayerName {
    #[serde(rename = "conv_1")]
    Conv1,
    #[serde(rename = "conv_2")]
    Conv2,
    #[serde(rename = "conv_3")]
    Conv3,
    #[serde(rename = "conv_4")]
    Conv4,
    #[serde(rename = "fc_1")]
    Fc1,
    #[serde(rename = "fc_2")]
    Fc2,
    #[serde(rename = "output")]
    Output,
}

impl LayerName {
    pub const ALL: [LayerName; 7] = [
        LayerName::Conv1,
        LayerName::Conv2,
        LayerName::Conv3,
        LayerName::Conv4,
        LayerName::Fc1,
        LayerName::Fc2,
        LayerName::Output,
    ];

    /// The name in Keras files and in the PyTorch tensor names (`conv_3.weight`).
    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Conv1 => "conv_1",
            LayerName::Conv2 => "conv_2",
            LayerName::Conv3 => "conv_3",
            LayerName::Conv4 => "conv_4",
            LayerName::Fc1 => "fc_1",
            LayerName::Fc2 => "fc_2",
            LayerName::Output => "output",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The convolution this layer is, if it is one.
    pub fn conv(self) -> Option<Conv> {
        match self {
            LayerName::Conv1 => Some(CONV_1),
            LayerName::Conv2 => Some(CONV_2),
            LayerName::Conv3 => Some(CONV_3),
            LayerName::Conv4 => Some(CONV_4),
            _ => None,
        }
    }

    /// For a dense layer fed by a flattened feature map, that map's (h, w): its inputs are
    /// in NHWC flatten order in Keras and NCHW in PyTorch.
    pub fn flattened_input(self) -> Option<(usize, usize)> {
        match self {
            LayerName::Fc1 => Some(POOL_3_HW),
            LayerName::Fc2 => Some(CONV_4_HW),
            _ => None,
        }
    }

    /// Weight shape in the PyTorch layout: conv (out, in, kh, kw), dense (out, in).
    pub fn weight_shape(self, classes: usize) -> Vec<usize> {
        if let Some(c) = self.conv() {
            return vec![c.outputs, c.inputs, c.kernel, c.kernel];
        }
        match self {
            LayerName::Fc1 => vec![FEATURES, POOL3_LEN],
            LayerName::Fc2 => vec![FEATURES, CONV4_LEN],
            _ => vec![classes, FEATURES],
        }
    }
}

impl std::fmt::Display for LayerName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per weighted layer, reached by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Layers<T> {
    pub conv_1: T,
    pub conv_2: T,
    pub conv_3: T,
    pub conv_4: T,
    pub fc_1: T,
    pub fc_2: T,
    pub output: T,
}

impl<T> Layers<T> {
    pub fn try_from_fn<E>(mut f: impl FnMut(LayerName) -> Result<T, E>) -> Result<Self, E> {
        Ok(Self {
            conv_1: f(LayerName::Conv1)?,
            conv_2: f(LayerName::Conv2)?,
            conv_3: f(LayerName::Conv3)?,
            conv_4: f(LayerName::Conv4)?,
            fc_1: f(LayerName::Fc1)?,
            fc_2: f(LayerName::Fc2)?,
            output: f(LayerName::Output)?,
        })
    }

    pub fn from_fn(mut f: impl FnMut(LayerName) -> T) -> Self {
        Self::try_from_fn(|l| Ok::<T, std::convert::Infallible>(f(l)))
            .unwrap_or_else(|e| match e {})
    }

    pub fn get(&self, layer: LayerName) -> &T {
        match layer {
            LayerName::Conv1 => &self.conv_1,
            LayerName::Conv2 => &self.conv_2,
            LayerName::Conv3 => &self.conv_3,
            LayerName::Conv4 => &self.conv_4,
            LayerName::Fc1 => &self.fc_1,
            LayerName::Fc2 => &self.fc_2,
            LayerName::Output => &self.output,
        }
    }

    pub fn get_mut(&mut self, layer: LayerName) -> &mut T {
        match layer {
            LayerName::Conv1 => &mut self.conv_1,
            LayerName::Conv2 => &mut self.conv_2,
            LayerName::Conv3 => &mut self.conv_3,
            LayerName::Conv4 => &mut self.conv_4,
            LayerName::Fc1 => &mut self.fc_1,
            LayerName::Fc2 => &mut self.fc_2,
            LayerName::Output => &mut self.output,
        }
    }

    /// The layers in forward order.
    pub fn iter(&self) -> impl Iterator<Item = (LayerName, &T)> {
        LayerName::ALL.into_iter().map(|l| (l, self.get(l)))
    }

    pub fn map<U>(&self, mut f: impl FnMut(LayerName, &T) -> U) -> Layers<U> {
        Layers::from_fn(|l| f(l, self.get(l)))
    }

    pub fn try_map<U, E>(
        &self,
        mut f: impl FnMut(LayerName, &T) -> Result<U, E>,
    ) -> Result<Layers<U>, E> {
        Layers::try_from_fn(|l| f(l, self.get(l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sizes_are_deepids() {
        assert_eq!(POOL_1_HW, (26, 22));
        assert_eq!(POOL_2_HW, (12, 10));
        assert_eq!(CONV_3_HW, (10, 8));
        assert_eq!(POOL_3_HW, (5, 4));
        assert_eq!(CONV_4_HW, (4, 3));
        assert_eq!((POOL3_LEN, CONV4_LEN, IMAGE_LEN), (1200, 960, 7755));
        assert_eq!(LayerName::Fc2.weight_shape(9), [160, 960]);
        assert_eq!(LayerName::parse("conv_3"), Some(LayerName::Conv3));
        assert_eq!(LayerName::parse("conv3"), None);
    }
}
