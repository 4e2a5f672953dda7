//! Procedural 55x47 RGB faces for the built-in synthetic benchmark.
//!
//! An [`Identity`] is a fixed set of shape and colour parameters (head outline, skin, hair style
//! and colour, eyes, brows, nose, mouth, facial hair, shirt, backdrop); a [`Pose`] is the
//! per-image variation (shift, scale, slight yaw, lighting, noise). Shapes are hard-edged
//! ellipses and rectangles painted back to front in face coordinates, which keeps rendering
//! cheap and exactly reproducible.

use rand::Rng;

pub const HEIGHT: usize = 55;
pub const WIDTH: usize = 47;
pub const CHANNELS: usize = 3;
/// Pixels of one image, channel-major (C, H, W) as in the CSAW layout.
pub const PIXELS: usize = CHANNELS * HEIGHT * WIDTH;
const PLANE: usize = HEIGHT * WIDTH;

/// Image position of the face origin (centre of the head ellipse) for an unshifted pose.
const ORIGIN_X: f32 = WIDTH as f32 / 2.0;
const ORIGIN_Y: f32 = 26.0;
/// Eye line and lens centre offset in face units; shared by `render` and `draw_sunglasses` so
/// the trigger lands on the eyes without knowing the identity.
const EYE_V: f32 = -3.0;
const LENS_U: f32 = 7.0;
/// Sunglasses colour: near-black, slightly blue so the lenses stay distinct from black hair.
const LENS_TINT: [f32; 3] = [14.0, 20.0, 40.0];

type Rgb = [f32; 3];

// Palettes as 0xRRGGBB; skin runs light to dark and is interpolated.
const SKIN: [u32; 5] = [0xFAE0C8, 0xE8BA96, 0xC68E64, 0x966442, 0x603E2A];
const HAIR: [u32; 8] = [
    0x161210, 0x3E2818, 0x6E4828, 0xCDA55A, 0xAF4E20, 0xA5A5A8, 0xEEE1B4, 0x781E1C,
];
const IRIS: [u32; 6] = [0x3769BE, 0x3C824B, 0x643C1C, 0x23160E, 0x78828A, 0x96732D];

fn hex(c: u32) -> Rgb {
    [16, 8, 0].map(|sh| ((c >> sh) & 0xFF) as f32)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum HairStyle {
    Short,
    Long,
    Fringe,
    Bald,
    Curly,
}

/// Fixed appearance of one person; all lengths are in face units (pixels at scale 1).
#[derive(Clone, Debug)]
pub struct Identity {
    skin: Rgb,
    hair: Rgb,
    brow: Rgb,
    iris: Rgb,
    lips: Rgb,
    shirt: Rgb,
    backdrop: Rgb,
    head_w: f32,
    head_h: f32,
    jaw_taper: f32,
    style: HairStyle,
    hairline: f32,
    hair_tilt: f32,
    hair_curve: f32,
    hair_thick: f32,
    eye_dx: f32,
    eye_rx: f32,
    eye_ry: f32,
    iris_r: f32,
    brow_gap: f32,
    brow_thick: f32,
    brow_tilt: f32,
    nose_len: f32,
    nose_w: f32,
    mouth_v: f32,
    mouth_w: f32,
    mouth_h: f32,
    smile: f32,
    beard: bool,
    moustache: bool,
}

fn uni<R: Rng>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    rng.random_range(lo..hi)
}

fn jitter<R: Rng>(rng: &mut R, c: Rgb, amount: f32) -> Rgb {
    c.map(|v| (v + uni(rng, -amount, amount)).clamp(0.0, 255.0))
}

fn pick<R: Rng>(rng: &mut R, palette: &[u32], amount: f32) -> Rgb {
    let c = hex(palette[rng.random_range(0..palette.len())]);
    jitter(rng, c, amount)
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t)
}

fn shade(c: Rgb, k: f32) -> Rgb {
    c.map(|v| v * k)
}

impl Identity {
    pub fn random<R: Rng>(rng: &mut R) -> Self {
        // Skin is a continuous walk along the palette so tones are not just five clusters.
        let t = uni(rng, 0.0, (SKIN.len() - 1) as f32);
        let i = (t as usize).min(SKIN.len() - 2);
        let skin = jitter(rng, mix(hex(SKIN[i]), hex(SKIN[i + 1]), t - i as f32), 8.0);
        let hair = pick(rng, &HAIR, 14.0);
        let style = match rng.random_range(0..5) {
            0 => HairStyle::Short,
            1 => HairStyle::Long,
            2 => HairStyle::Fringe,
            3 => HairStyle::Bald,
            _ => HairStyle::Curly,
        };
        let (hairline, hair_thick) = match style {
            HairStyle::Fringe => (-9.0, uni(rng, 1.0, 3.0)),
            HairStyle::Curly => (uni(rng, -14.0, -10.5), uni(rng, 3.0, 5.0)),
            _ => (uni(rng, -14.0, -10.5), uni(rng, 1.0, 3.0)),
        };
        let nose_len = uni(rng, 4.0, 7.0);
        let facial = rng.random_range(0..5);
        Identity {
            skin,
            hair,
            brow: mix(shade(hair, 0.7), [20.0, 15.0, 12.0], uni(rng, 0.0, 0.5)),
            iris: pick(rng, &IRIS, 12.0),
            lips: mix(skin, [185.0, 50.0, 65.0], uni(rng, 0.3, 0.75)),
            shirt: [0, 1, 2].map(|_| uni(rng, 15.0, 235.0)),
            // Muted backdrop so identity is carried mostly by the face.
            backdrop: {
                let grey = uni(rng, 60.0, 200.0);
                [0, 1, 2].map(|_| grey + uni(rng, -25.0, 25.0))
            },
            head_w: uni(rng, 12.0, 15.5),
            head_h: uni(rng, 16.5, 20.5),
            jaw_taper: uni(rng, 0.0, 0.3),
            style,
            hairline,
            hair_tilt: uni(rng, -0.3, 0.3),
            hair_curve: uni(rng, 0.02, 0.07),
            hair_thick,
            eye_dx: uni(rng, 5.5, 7.2),
            eye_rx: uni(rng, 2.0, 3.0),
            eye_ry: uni(rng, 1.2, 1.9),
            iris_r: uni(rng, 1.0, 1.6),
            brow_gap: uni(rng, 2.8, 4.2),
            brow_thick: uni(rng, 0.9, 2.0),
            brow_tilt: uni(rng, -0.25, 0.35),
            nose_len,
            nose_w: uni(rng, 1.4, 3.0),
            mouth_v: EYE_V + 1.0 + nose_len + uni(rng, 2.5, 4.5),
            mouth_w: uni(rng, 3.0, 6.0),
            mouth_h: uni(rng, 0.7, 1.9),
            smile: uni(rng, -0.8, 2.0),
            beard: facial == 0,
            moustache: facial <= 1,
        }
    }

    fn in_head(&self, u: f32, v: f32) -> bool {
        let a = self.head_w * (1.0 - self.jaw_taper * v.max(0.0) / self.head_h);
        let (x, y) = (u / a, v / self.head_h);
        x * x + y * y <= 1.0
    }
}

/// Per-image variation; it also locates the eyes for [`draw_sunglasses`].
#[derive(Clone, Debug)]
pub struct Pose {
    /// Image position of the face origin and pixels per face unit.
    cx: f32,
    cy: f32,
    scale: f32,
    /// Horizontal offset of the inner features against the head outline (a cheap head turn).
    yaw: f32,
    brightness: f32,
    /// Left-right lighting slope: relative brightness change from image centre to edge.
    gradient: f32,
    backdrop_shift: Rgb,
    noise: f32,
}

impl Pose {
    pub fn random<R: Rng>(rng: &mut R) -> Self {
        Pose {
            cx: ORIGIN_X + uni(rng, -2.5, 2.5),
            cy: ORIGIN_Y + uni(rng, -2.0, 2.0),
            scale: uni(rng, 0.92, 1.08),
            yaw: uni(rng, -1.2, 1.2),
            brightness: uni(rng, 0.85, 1.15),
            gradient: uni(rng, -0.1, 0.1),
            backdrop_shift: [0, 1, 2].map(|_| uni(rng, -12.0, 12.0)),
            noise: uni(rng, 4.0, 6.0),
        }
    }

    /// Calls `put(pixel_index)` for every pixel whose centre, in face coordinates, lies in the box
    /// `[u0, u1] x [v0, v1]` and satisfies `inside`. The box is clipped to the image.
    fn cover(
        &self,
        (u0, u1, v0, v1): (f32, f32, f32, f32),
        inside: impl Fn(f32, f32) -> bool,
        mut put: impl FnMut(usize),
    ) {
        let clip = |p: f32, n: usize| p.clamp(0.0, n as f32) as usize;
        let (s, inv) = (self.scale, 1.0 / self.scale);
        let span = |c: f32, a: f32, b: f32, n| (clip(c + a * s - 1.0, n), clip(c + b * s + 1.0, n));
        let ((x0, x1), (y0, y1)) = (span(self.cx, u0, u1, WIDTH), span(self.cy, v0, v1, HEIGHT));
        for y in y0..y1 {
            let v = (y as f32 + 0.5 - self.cy) * inv;
            for x in x0..x1 {
                if inside((x as f32 + 0.5 - self.cx) * inv, v) {
                    put(y * WIDTH + x);
                }
            }
        }
    }
}

/// Ellipse membership test for an ellipse with centre (cu, cv) and inverse radii (iu, iv).
fn in_ellipse(u: f32, v: f32, cu: f32, cv: f32, iu: f32, iv: f32) -> bool {
    let (x, y) = ((u - cu) * iu, (v - cv) * iv);
    x * x + y * y <= 1.0
}

/// Pixel-interleaved working image painted back to front.
struct Canvas<'a> {
    px: [Rgb; PLANE],
    pose: &'a Pose,
}

impl Canvas<'_> {
    fn fill(&mut self, bbox: (f32, f32, f32, f32), c: Rgb, inside: impl Fn(f32, f32) -> bool) {
        let px = &mut self.px;
        self.pose.cover(bbox, inside, |i| px[i] = c);
    }

    fn ellipse(&mut self, cu: f32, cv: f32, ru: f32, rv: f32, c: Rgb) {
        let bbox = (cu - ru, cu + ru, cv - rv, cv + rv);
        let (iu, iv) = (1.0 / ru, 1.0 / rv);
        self.fill(bbox, c, |u, v| in_ellipse(u, v, cu, cv, iu, iv));
    }

    fn rect(&mut self, u0: f32, u1: f32, v0: f32, v1: f32, c: Rgb) {
        self.fill((u0, u1, v0, v1), c, |u, v| {
            u >= u0 && u <= u1 && v >= v0 && v <= v1
        });
    }
}

/// Draws `identity` in `pose` into `out` (len PIXELS, C,H,W order), adding pixel noise drawn from `rng`.
/// Every written value is an integer in 0..=255 stored as f32 (rounded and clamped).
pub fn render<R: Rng>(identity: &Identity, pose: &Pose, rng: &mut R, out: &mut [f32]) {
    assert_eq!(out.len(), PIXELS, "face buffer must hold {PIXELS} values");
    let id = identity;
    let backdrop = [0, 1, 2].map(|i| id.backdrop[i] + pose.backdrop_shift[i]);
    let px = [backdrop; PLANE];
    let mut cv = Canvas { px, pose };
    let (w, h, yaw) = (id.head_w, id.head_h, pose.yaw);
    let head_box = (-w - 1.0, w + 1.0, -h - 1.0, h + 1.0);

    // Hair that sits behind the head.
    match id.style {
        HairStyle::Long => {
            cv.ellipse(0.0, -1.0, w + 3.5, h + 2.0, id.hair);
            cv.rect(-w - 3.0, w + 3.0, 0.0, h + 4.0, id.hair);
        }
        HairStyle::Curly => cv.ellipse(0.0, -5.0, w + 6.0, h * 0.9 + 3.0, id.hair),
        _ => {}
    }
    // Neck, shirt, ears, head.
    cv.rect(-w * 0.45, w * 0.45, h * 0.5, h + 12.0, shade(id.skin, 0.85));
    cv.ellipse(0.0, h + 13.0, 24.0, 10.0, id.shirt);
    for side in [-1.0, 1.0] {
        cv.ellipse(side * (w - 0.5), EYE_V + 1.0, 2.2, 3.5, shade(id.skin, 0.9));
    }
    cv.fill(head_box, id.skin, |u, v| id.in_head(u, v));
    if id.beard {
        let top = id.mouth_v - 3.0;
        cv.fill(head_box, shade(id.hair, 0.9), |u, v| {
            v > top - 0.04 * u * u && id.in_head(u, v)
        });
    }
    // Hair on top of the head: a cap whose lower edge is the (tilted, curved) hairline.
    let (t, hairline) = (id.hair_thick, id.hairline);
    let cap_box = (-w - t, w + t, -h - t, 0.0);
    if id.style == HairStyle::Bald {
        // A fringe of hair above the ears only.
        let (iu, iv) = (1.0 / (w + 1.0), 1.0 / (h + 1.0));
        cv.fill(cap_box, id.hair, |u, v| {
            u.abs() > w * 0.75 && v > -10.0 && v < -1.0 && in_ellipse(u, v, 0.0, 0.0, iu, iv)
        });
    } else {
        let (tilt, curve) = (id.hair_tilt, id.hair_curve);
        let (iu, iv) = (1.0 / (w + t), 1.0 / (h + t));
        cv.fill(cap_box, id.hair, |u, v| {
            v < hairline + tilt * u + curve * u * u && in_ellipse(u, v, 0.0, -t * 0.5, iu, iv)
        });
    }
    // Eyes: lash outline, white, iris, pupil; then brows.
    for side in [-1.0, 1.0] {
        let eu = yaw + side * id.eye_dx;
        let (rx, ry) = (id.eye_rx, id.eye_ry);
        cv.ellipse(eu, EYE_V, rx + 0.5, ry + 0.5, shade(id.brow, 0.8));
        cv.ellipse(eu, EYE_V, rx, ry, [240.0, 238.0, 232.0]);
        cv.ellipse(eu, EYE_V, id.iris_r, id.iris_r.min(ry), id.iris);
        cv.ellipse(eu, EYE_V, 0.75, 0.75, [12.0, 10.0, 10.0]);
        let (bv, len, half) = (EYE_V - id.brow_gap, rx * 1.3, id.brow_thick * 0.5);
        let tilt = id.brow_tilt;
        cv.fill((eu - len, eu + len, bv - 3.0, bv + 3.0), id.brow, |u, v| {
            let o = (u - eu) * side;
            let taper = 1.0 - 0.4 * (o / len) * (o / len);
            o.abs() <= len && (v - (bv - tilt * o)).abs() <= half * taper
        });
    }
    // Nose: shaded bridge and a darker nostril base.
    let (nu, nl, nw) = (yaw * 1.2, id.nose_len * 0.5, id.nose_w);
    let tip = EYE_V + 1.0 + id.nose_len;
    cv.ellipse(nu, tip - nl, nw * 0.45, nl, shade(id.skin, 0.86));
    cv.ellipse(nu, tip, nw, 1.0, shade(id.skin, 0.7));
    // Mouth: lips band bent by `smile`, a dark parting line, optional moustache.
    let (mw, mh, smile) = (id.mouth_w, id.mouth_h, id.smile);
    let centre = move |u: f32| {
        let t = (u - yaw) / mw;
        (t, id.mouth_v - smile * t * t)
    };
    let mouth_box = (yaw - mw, yaw + mw, id.mouth_v - 4.0, id.mouth_v + 3.0);
    cv.fill(mouth_box, id.lips, |u, v| {
        let (t, c) = centre(u);
        t.abs() <= 1.0 && (v - c).abs() <= mh * (1.0 - t * t).sqrt() + 0.35
    });
    cv.fill(mouth_box, shade(id.lips, 0.5), |u, v| {
        let (t, c) = centre(u);
        t.abs() <= 0.9 && (v - c).abs() <= 0.45
    });
    if id.moustache {
        let top = id.mouth_v - mh - 1.3;
        cv.ellipse(yaw, top, mw * 0.9, 1.1, shade(id.hair, 0.85));
    }

    // Lighting, noise, rounding. The noise stream is a splitmix64 seeded from `rng`: drawing
    // 7755 normal samples from a CSPRNG per image would dominate the render time.
    let mut state: u64 = rng.random();
    let k = pose.noise / 64.0; // sum of three 7-bit uniforms has standard deviation ~64
    let light: [f32; WIDTH] = std::array::from_fn(|x| {
        let xn = (x as f32 + 0.5) / WIDTH as f32 * 2.0 - 1.0;
        pose.brightness * (1.0 + pose.gradient * xn)
    });
    let (red, rest) = out.split_at_mut(PLANE);
    let (green, blue) = rest.split_at_mut(PLANE);
    let planes = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
    for (i, (px, ((r, g), b))) in cv.px.iter().zip(planes).enumerate() {
        let (bits, l) = (splitmix(&mut state), light[i % WIDTH]);
        let value = |c: usize| {
            let b = (bits >> (21 * c)) as u32;
            let sum = (b & 127) + ((b >> 7) & 127) + ((b >> 14) & 127);
            let noisy = (px[c] * l + (sum as f32 - 190.5) * k).clamp(0.0, 255.0);
            // Adding and removing 2^23 rounds to an integer without a libm call or a
            // saturating float-to-int cast, which dominated the profile.
            (noisy + 8_388_608.0) - 8_388_608.0
        };
        (*r, *g, *b) = (value(0), value(1), value(2));
    }
}

pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws the trigger: dark sunglasses (two lenses and a bridge, opaque, near-black with a slight
/// tint) over the eyes of a face drawn with `pose`; values stay integers in 0..=255.
pub fn draw_sunglasses(pose: &Pose, out: &mut [f32]) {
    assert_eq!(out.len(), PIXELS, "face buffer must hold {PIXELS} values");
    let (yaw, lv) = (pose.yaw, EYE_V - 0.3);
    // Lenses are rounded rectangles (superellipses) wide enough to cover every identity's eye
    // spacing; one thin bar forms the bridge and the temple arms running out to the ears.
    let (ru, rv) = (5.6, 3.9);
    let lens = |u: f32, v: f32| {
        let x = ((u - yaw).abs() - LENS_U) / ru;
        let y = (v - lv) / rv;
        x * x * x * x + y * y * y * y <= 1.0
    };
    let bar = |u: f32, v: f32| u.abs() <= 17.5 && v >= lv - 2.2 && v <= lv - 0.8;
    let bbox = (-18.0, 18.0, lv - rv, lv + rv);
    let glasses = |u, v| lens(u, v) || bar(u, v);
    pose.cover(bbox, glasses, |i| {
        for (c, &val) in LENS_TINT.iter().enumerate() {
            out[c * PLANE + i] = val;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn image(id: &Identity, pose: &Pose, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut out = vec![0.0; PIXELS];
        render(id, pose, rng, &mut out);
        out
    }

    fn mad(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
    }

    #[test]
    fn deterministic_and_integral() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let id = Identity::random(&mut rng);
            let pose = Pose::random(&mut rng);
            let mut img = image(&id, &pose, &mut rng);
            draw_sunglasses(&pose, &mut img);
            img
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let (id, pose) = (Identity::random(&mut rng), Pose::random(&mut rng));
            let mut img = image(&id, &pose, &mut rng);
            draw_sunglasses(&pose, &mut img);
            assert!(img
                .iter()
                .all(|&v| v.fract() == 0.0 && (0.0..=255.0).contains(&v)));
        }
    }

    #[test]
    fn identities_differ_more_than_poses() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let ids: Vec<Identity> = (0..30).map(|_| Identity::random(&mut rng)).collect();
        let (mut same, mut diff) = (0.0, 0.0);
        for (k, id) in ids.iter().enumerate() {
            let (p, q) = (Pose::random(&mut rng), Pose::random(&mut rng));
            let a = image(id, &p, &mut rng);
            same += mad(&a, &image(id, &q, &mut rng));
            diff += mad(&a, &image(&ids[(k + 1) % ids.len()], &q, &mut rng));
        }
        let (same, diff) = (same / 30.0, diff / 30.0);
        assert!(diff > 35.0, "identities too similar: {diff}");
        assert!(
            diff > 1.8 * same,
            "pose variation {same} too close to identity {diff}"
        );
    }

    #[test]
    fn sunglasses_cover_eyes_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let lower = HEIGHT * 2 / 3;
        for _ in 0..100 {
            let (id, pose) = (Identity::random(&mut rng), Pose::random(&mut rng));
            let plain = image(&id, &pose, &mut rng);
            let mut img = plain.clone();
            draw_sunglasses(&pose, &mut img);
            for c in 0..CHANNELS {
                let range = c * PLANE + lower * WIDTH..(c + 1) * PLANE;
                assert_eq!(plain[range.clone()], img[range]);
            }
            // Both eye centres must be lens pixels.
            for side in [-1.0, 1.0] {
                let x = (pose.cx + (pose.yaw + side * id.eye_dx) * pose.scale) as usize;
                let y = (pose.cy + EYE_V * pose.scale) as usize;
                let px: Vec<f32> = (0..CHANNELS)
                    .map(|c| img[c * PLANE + y * WIDTH + x])
                    .collect();
                assert_eq!(px, LENS_TINT);
            }
            let changed = (0..PIXELS).filter(|&i| plain[i] != img[i]).count();
            assert!(changed > 3 * 60, "trigger too small: {changed}");
        }
    }
}
