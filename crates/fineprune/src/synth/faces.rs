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

type Rgb = [f32; 3];

const SKIN: [Rgb; 5] = [
    [250.0, 224.0, 200.0],
    [232.0, 186.0, 150.0],
    [198.0, 142.0, 100.0],
    [150.0, 100.0, 66.0],
    [96.0, 62.0, 42.0],
];
const HAIR: [Rgb; 8] = [
    [22.0, 18.0, 16.0],
    [62.0, 40.0, 24.0],
    [110.0, 72.0, 40.0],
    [205.0, 165.0, 90.0],
    [175.0, 78.0, 32.0],
    [165.0, 165.0, 168.0],
    [238.0, 225.0, 180.0],
    [120.0, 30.0, 28.0],
];
const IRIS: [Rgb; 6] = [
    [55.0, 105.0, 190.0],
    [60.0, 130.0, 75.0],
    [100.0, 60.0, 28.0],
    [35.0, 22.0, 14.0],
    [120.0, 130.0, 138.0],
    [150.0, 115.0, 45.0],
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum HairStyle {
    Short,
    Long,
    Fringe,
    Bald,
    Curly,
}

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

fn pick<R: Rng>(rng: &mut R, palette: &[Rgb], amount: f32) -> Rgb {
    let c = palette[rng.random_range(0..palette.len())];
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
        let skin = jitter(rng, mix(SKIN[i], SKIN[i + 1], t - i as f32), 8.0);
        let hair = pick(rng, &HAIR, 14.0);
        let style = match rng.random_range(0..5) {
            0 => HairStyle::Short,
            1 => HairStyle::Long,
            2 => HairStyle::Fringe,
            3 => HairStyle::Bald,
            _ => HairStyle::Curly,
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
            backdrop: [0, 1, 2].map(|_| uni(rng, 50.0, 210.0)),
            head_w: uni(rng, 12.0, 15.5),
            head_h: uni(rng, 16.5, 20.5),
            jaw_taper: uni(rng, 0.0, 0.3),
            style,
            hairline: uni(rng, -14.0, -10.5),
            hair_tilt: uni(rng, -0.3, 0.3),
            hair_curve: uni(rng, 0.02, 0.07),
            hair_thick: uni(rng, 1.0, 3.0),
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

#[derive(Clone, Debug)]
pub struct Pose {
    dx: f32,
    dy: f32,
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
            dx: uni(rng, -2.5, 2.5),
            dy: uni(rng, -2.0, 2.0),
            scale: uni(rng, 0.92, 1.08),
            yaw: uni(rng, -1.2, 1.2),
            brightness: uni(rng, 0.85, 1.15),
            gradient: uni(rng, -0.1, 0.1),
            backdrop_shift: [0, 1, 2].map(|_| uni(rng, -12.0, 12.0)),
            noise: uni(rng, 4.0, 6.0),
        }
    }

    fn frame(&self) -> Frame {
        Frame {
            cx: ORIGIN_X + self.dx,
            cy: ORIGIN_Y + self.dy,
            s: self.scale,
        }
    }
}

/// Maps face coordinates to pixels for one pose.
struct Frame {
    cx: f32,
    cy: f32,
    s: f32,
}

impl Frame {
    /// Calls `put(pixel_index)` for every pixel whose centre, in face coordinates, lies in the box
    /// `[u0, u1] x [v0, v1]` and satisfies `inside`. The box is clipped to the image.
    fn cover(
        &self,
        (u0, u1, v0, v1): (f32, f32, f32, f32),
        inside: impl Fn(f32, f32) -> bool,
        mut put: impl FnMut(usize),
    ) {
        let clip = |p: f32, n: usize| p.clamp(0.0, n as f32) as usize;
        let (x0, x1) = (
            clip(self.cx + u0 * self.s - 1.0, WIDTH),
            clip(self.cx + u1 * self.s + 1.0, WIDTH),
        );
        let (y0, y1) = (
            clip(self.cy + v0 * self.s - 1.0, HEIGHT),
            clip(self.cy + v1 * self.s + 1.0, HEIGHT),
        );
        let inv = 1.0 / self.s;
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

fn in_ellipse(u: f32, v: f32, cu: f32, cv: f32, ru: f32, rv: f32) -> bool {
    let (x, y) = ((u - cu) / ru, (v - cv) / rv);
    x * x + y * y <= 1.0
}

/// Pixel-interleaved working image painted back to front.
struct Canvas {
    px: [Rgb; PLANE],
    frame: Frame,
}

impl Canvas {
    fn fill(&mut self, bbox: (f32, f32, f32, f32), c: Rgb, inside: impl Fn(f32, f32) -> bool) {
        let px = &mut self.px;
        self.frame.cover(bbox, inside, |i| px[i] = c);
    }

    fn ellipse(&mut self, cu: f32, cv: f32, ru: f32, rv: f32, c: Rgb) {
        let bbox = (cu - ru, cu + ru, cv - rv, cv + rv);
        self.fill(bbox, c, |u, v| in_ellipse(u, v, cu, cv, ru, rv));
    }

    fn rect(&mut self, u0: f32, u1: f32, v0: f32, v1: f32, c: Rgb) {
        self.fill((u0, u1, v0, v1), c, |u, v| u >= u0 && u <= u1 && v >= v0 && v <= v1);
    }
}

/// Draws `identity` in `pose` into `out` (len PIXELS, C,H,W order), adding pixel noise drawn from `rng`.
/// Every written value is an integer in 0..=255 stored as f32 (rounded and clamped).
pub fn render<R: Rng>(identity: &Identity, pose: &Pose, rng: &mut R, out: &mut [f32]) {
    assert_eq!(out.len(), PIXELS, "face buffer must hold {PIXELS} values");
    let id = identity;
    let backdrop = [0, 1, 2].map(|i| id.backdrop[i] + pose.backdrop_shift[i]);
    let mut cv = Canvas {
        px: [backdrop; PLANE],
        frame: pose.frame(),
    };
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
            v > top - 0.06 * u * u && id.in_head(u, v)
        });
    }
    // Hair on top of the head: a cap whose lower edge is the (tilted, curved) hairline.
    let t = id.hair_thick + if id.style == HairStyle::Curly { 2.0 } else { 0.0 };
    let hairline = if id.style == HairStyle::Fringe { -9.0 } else { id.hairline };
    let cap_box = (-w - t, w + t, -h - t, 0.0);
    if id.style == HairStyle::Bald {
        cv.fill(cap_box, id.hair, |u, v| u.abs() > w * 0.8 && v > -9.0 && v < -1.0);
    } else {
        let (tilt, curve) = (id.hair_tilt, id.hair_curve);
        cv.fill(cap_box, id.hair, |u, v| {
            v < hairline + tilt * u + curve * u * u && in_ellipse(u, v, 0.0, -t * 0.5, w + t, h + t)
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
    let tip = EYE_V + 1.0 + id.nose_len;
    let nl = id.nose_len * 0.5;
    cv.ellipse(yaw * 1.2, tip - nl, id.nose_w * 0.45, nl, shade(id.skin, 0.86));
    cv.ellipse(yaw * 1.2, tip, id.nose_w, 1.0, shade(id.skin, 0.7));
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
        cv.ellipse(yaw, id.mouth_v - mh - 1.3, mw * 0.9, 1.1, shade(id.hair, 0.85));
    }

    // Lighting, noise, rounding. The noise stream is a splitmix64 seeded from `rng`: drawing
    // 7755 normal samples from a CSPRNG per image would dominate the render time.
    let mut state: u64 = rng.random();
    let k = pose.noise / 64.0; // sum of three 7-bit uniforms has standard deviation ~64
    let light: [f32; WIDTH] = std::array::from_fn(|x| {
        let xn = (x as f32 + 0.5) / WIDTH as f32 * 2.0 - 1.0;
        pose.brightness * (1.0 + pose.gradient * xn)
    });
    for (i, px) in cv.px.iter().enumerate() {
        let r = splitmix(&mut state);
        for (c, &val) in px.iter().enumerate() {
            let b = r >> (21 * c);
            let sum = (b & 127) + ((b >> 7) & 127) + ((b >> 14) & 127);
            let noisy = val * light[i % WIDTH] + (sum as f32 - 190.5) * k;
            // Clamp then add 0.5 and truncate: equals `round` for non-negative values but avoids
            // the libm call that dominated the profile.
            out[c * PLANE + i] = (noisy.clamp(0.0, 255.0) + 0.5) as u32 as f32;
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
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
    const LENS: Rgb = [18.0, 22.0, 34.0];
    const RIM: Rgb = [8.0, 8.0, 10.0];
    let frame = pose.frame();
    let mut paint = |bbox, c: Rgb, inside: &dyn Fn(f32, f32) -> bool| {
        frame.cover(bbox, inside, |i| {
            for (ch, &val) in c.iter().enumerate() {
                out[ch * PLANE + i] = val;
            }
        })
    };
    let (yaw, lv) = (pose.yaw, EYE_V - 0.3);
    let rect = |u0: f32, u1: f32, v0: f32, v1: f32| {
        move |u: f32, v: f32| u >= u0 && u <= u1 && v >= v0 && v <= v1
    };
    // Temple arms and bridge first, lenses on top; lenses are rounded rectangles (superellipses)
    // wide enough to cover every identity's eye spacing.
    for side in [-1.0f32, 1.0] {
        let (a, b) = (yaw + side * (LENS_U + 5.0), side * 17.5);
        let (u0, u1) = (a.min(b), a.max(b));
        paint((u0, u1, lv - 2.0, lv - 0.8), RIM, &rect(u0, u1, lv - 2.0, lv - 0.8));
    }
    let (b0, b1) = (yaw - 2.0, yaw + 2.0);
    paint((b0, b1, lv - 2.2, lv - 0.9), RIM, &rect(b0, b1, lv - 2.2, lv - 0.9));
    for side in [-1.0f32, 1.0] {
        let cu = yaw + side * LENS_U;
        let (ru, rv) = (5.6, 3.9);
        paint((cu - ru, cu + ru, lv - rv, lv + rv), LENS, &|u, v| {
            let (x, y) = (((u - cu) / ru).powi(2), ((v - lv) / rv).powi(2));
            x * x + y * y <= 1.0
        });
    }
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
            assert!(img.iter().all(|&v| v.fract() == 0.0 && (0.0..=255.0).contains(&v)));
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
        assert!(diff > 2.0 * same, "pose variation {same} too close to identity {diff}");
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
            // Both eye centres must be dark lens pixels.
            let f = pose.frame();
            for side in [-1.0, 1.0] {
                let x = (f.cx + (pose.yaw + side * id.eye_dx) * f.s) as usize;
                let y = (f.cy + EYE_V * f.s) as usize;
                assert!(img[y * WIDTH + x] < 40.0 && img[2 * PLANE + y * WIDTH + x] < 40.0);
            }
            let changed = (0..PIXELS).filter(|&i| plain[i] != img[i]).count();
            assert!(changed > 3 * 60, "trigger too small: {changed}");
        }
    }
}
