//! Built-in procedural eye generator: labelled 55×35 grayscale eye images in two domains, so the
//! whole pipeline runs with nothing downloaded.
//!
//! This file owns [`Domain`], [`RenderConfig`] (every knob of the label distribution and of the
//! appearance gap), [`AngleDist`] and [`render`]. It draws; it does not encode or store.
//!
//! # Geometry (shared by both domains)
//!
//! The eye is a small 3-D model viewed orthographically in the camera frame of the project gaze
//! convention (see [`crate::domains::eyes`]): an eyeball sphere of radius `R`, and a flat iris disk of
//! radius `r_i` (with a concentric pupil) in the plane perpendicular to the gaze `g` at distance
//! `D = sqrt(R² − r_i²)` from the eyeball centre. A pixel's ray is intersected with that plane,
//! so the iris and pupil come out as ellipses whose centre (`eyeball centre + D·(g_x, g_y)`) and
//! foreshortening (minor/major = `|g_z|`) encode pitch and yaw exactly. The sclera is shaded as a
//! sphere. The iris-centre landmark is that projected centre, so it moves left for positive yaw
//! and up for positive pitch.
//!
//! Around the eyeball sit two lid curves between the eye corners (a canthal axis tilted so the
//! outer corner is higher; parabolic lids with a skewed apex). The lids follow the eye-in-head
//! pitch (`gaze pitch − head pitch`): the upper lid rises when the eye looks up and drops when it
//! looks down, the lower lid follows less. Head pose moves the lid frame relative to the eyeball
//! (parallax), squashes it with `cos(yaw)`/`cos(pitch)` and rotates it in-plane by the roll. Skin
//! carries a lid margin, a lid crease, a lower-lid rim and a caruncle at the inner corner. Edges
//! are anti-aliased analytically (signed distances turned into coverage), so the image is drawn
//! once at 55×35 with no supersampling.
//!
//! # The two domains
//!
//! Both domains draw geometry from the same model; only the label distribution and appearance
//! knobs differ (see [`RenderConfig::for_domain`]):
//! - [`Domain::Synthetic`]: wide, uniform gaze (pitch ±30°, yaw ±40°) and head pose; clean, sharp,
//!   noise-free, evenly lit, flat-toned skin, bright sclera, no glints, no lashes — the analogue of
//!   UnityEyes renders.
//! - [`Domain::RealLike`]: narrower, normal-distributed gaze centred slightly downward (laptop
//!   users, as in MPIIGaze) and head pose; skin texture, an uneven light gradient, lid shadows,
//!   optical blur, sensor noise, contrast/brightness/gamma jitter, corneal glints, eyelashes, a
//!   darker sclera — the analogue of MPIIGaze crops.
//!
//! The appearance gap is deliberately *local and learnable* (noise, texture, blur, tone curves,
//! glints, lashes, smooth gradients): a refiner made of 3×3 convolutions can close it while keeping
//! the geometry. The iris is never moved relative to its label in either domain.
//!
//! # Randomness and determinism
//!
//! [`render`] takes exactly two `u64`s from the caller's RNG (one seeds the geometry stream, one
//! the appearance stream) and then uses an internal SplitMix64 generator, which is fast enough for
//! per-pixel noise. The same caller seed gives the same image bit for bit, and two configs that
//! differ only in appearance knobs give the same geometry and labels for the same seed.
//!
//! # Configuration
//!
//! [`RenderConfig`] deserialises from a *partial* table: the preset of its `domain` field
//! (default `synthetic`) fills every knob that is not given, and unknown keys are an error, e.g.
//! `{ domain = "real-like", noise_std = [0.0, 0.01], blur_sigma_px = 0.5, gaze_yaw = [-10, 10] }`:
//! a `[lo, hi]` range knob also accepts one number (a fixed value), and an angle distribution
//! also accepts a number (fixed) or a `[min, max]` pair (uniform). Deserialisation validates;
//! [`render`] itself never panics on a bad config (it clamps every knob into its valid range).

use std::fmt;
use std::str::FromStr;

use image::GrayImage;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize};

use super::{EYE_H, EYE_W, EyeSample, from_pitch_yaw};

/// Number of landmarks [`render`] emits (8 lid points and the iris centre); the
/// `landmarks` vector holds twice as many floats (`x, y` pairs in image pixels).
pub const LANDMARK_COUNT: usize = 9;
/// Index of the iris-centre landmark (its `x` is `landmarks[2 * IRIS_CENTRE_LANDMARK]`).
pub const IRIS_CENTRE_LANDMARK: usize = 8;

const W: usize = EYE_W as usize;
const H: usize = EYE_H as usize;

/// Which image domain a [`RenderConfig`] preset imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    /// Clean renders with a wide label distribution (the "simulated" side, like UnityEyes).
    #[default]
    Synthetic,
    /// Noisy, blurred, unevenly lit renders with a narrower label distribution (the "real" side).
    RealLike,
}

impl Domain {
    /// The name used in configs and on the command line: `synthetic` or `real-like`.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Synthetic => "synthetic",
            Domain::RealLike => "real-like",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Domain {
    type Err = RenderError;

    /// Parses `synthetic` or `real-like` (case-insensitive; `real_like` is accepted too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "synthetic" => Ok(Domain::Synthetic),
            "real-like" | "real_like" => Ok(Domain::RealLike),
            _ => Err(RenderError::UnknownDomain(s.to_string())),
        }
    }
}

/// Errors of this module: bad domain names and invalid configs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// A domain name other than `synthetic` / `real-like`.
    #[error("unknown eye domain {0:?}: expected \"synthetic\" or \"real-like\"")]
    UnknownDomain(String),
    /// A knob outside its valid range.
    #[error("render config `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Distribution of one angle, in degrees.
///
/// `std_deg == 0` draws uniformly from `[min_deg, max_deg]`; `std_deg > 0` draws from a normal
/// with `mean_deg` and `std_deg` truncated to `[min_deg, max_deg]` (rejection, up to 8 tries, then
/// uniform).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AngleDist {
    /// Smallest value drawn, degrees.
    pub min_deg: f32,
    /// Largest value drawn, degrees.
    pub max_deg: f32,
    /// Centre of the normal (ignored when `std_deg` is 0), degrees; default 0.
    #[serde(default)]
    pub mean_deg: f32,
    /// Standard deviation, degrees; 0 (the default) means uniform on the range.
    #[serde(default)]
    pub std_deg: f32,
}

impl AngleDist {
    /// Uniform on `[min_deg, max_deg]`.
    pub const fn uniform(min_deg: f32, max_deg: f32) -> Self {
        AngleDist {
            min_deg,
            max_deg,
            mean_deg: 0.0,
            std_deg: 0.0,
        }
    }

    /// Normal(`mean_deg`, `std_deg`) truncated to `[min_deg, max_deg]`.
    pub const fn normal(mean_deg: f32, std_deg: f32, min_deg: f32, max_deg: f32) -> Self {
        AngleDist {
            min_deg,
            max_deg,
            mean_deg,
            std_deg,
        }
    }

    fn validate(&self, field: &'static str, bound: f32) -> Result<(), RenderError> {
        let bad = |reason: String| Err(RenderError::InvalidConfig { field, reason });
        let vals = [self.min_deg, self.max_deg, self.mean_deg, self.std_deg];
        if vals.iter().any(|v| !v.is_finite()) {
            return bad(format!("all values must be finite, got {self:?}"));
        }
        if self.min_deg > self.max_deg {
            return bad(format!(
                "min_deg {} > max_deg {}",
                self.min_deg, self.max_deg
            ));
        }
        if self.min_deg < -bound || self.max_deg > bound {
            return bad(format!("range must lie within ±{bound}°, got {self:?}"));
        }
        if self.std_deg < 0.0 || self.std_deg > 90.0 {
            return bad(format!("std_deg must be in [0, 90], got {}", self.std_deg));
        }
        Ok(())
    }

    /// Draws one angle in degrees, clamping a bad distribution into `±bound`.
    fn sample(&self, bound: f32, r: &mut Fast) -> f32 {
        let [lo, hi] = san2([self.min_deg, self.max_deg], -bound, bound);
        let std = san(self.std_deg, 0.0, 90.0);
        if std > 0.0 {
            let mean = san(self.mean_deg, -bound, bound);
            for _ in 0..8 {
                let v = mean + std * r.gauss();
                if (lo..=hi).contains(&v) {
                    return v;
                }
            }
        }
        r.range([lo, hi])
    }
}

// Valid ranges, shared by `validate` (which rejects) and `render` (which clamps).
const GAZE_BOUND_DEG: f32 = 60.0;
const HEAD_BOUND_DEG: f32 = 45.0;
const B_PARALLAX: (f32, f32) = (0.0, 1.5);
const B_JITTER: (f32, f32) = (0.0, 6.0);
const B_HALF_WIDTH: (f32, f32) = (8.0, 26.0);
const B_EYEBALL: (f32, f32) = (0.5, 1.2);
const B_IRIS: (f32, f32) = (0.3, 0.7);
const B_PUPIL: (f32, f32) = (0.1, 0.85);
const B_LID_OPEN: (f32, f32) = (0.2, 2.0);
const B_LID_FOLLOW: (f32, f32) = (0.0, 1.5);
const B_TILT: (f32, f32) = (-20.0, 20.0);
const B_TONE: (f32, f32) = (0.0, 1.0);
const B_IRIS_TEX: (f32, f32) = (0.0, 2.0);
const B_UNIT: (f32, f32) = (0.0, 1.0);
const B_LIGHT: (f32, f32) = (0.0, 0.9);
const B_BLUR: (f32, f32) = (0.0, 3.0);
const B_NOISE: (f32, f32) = (0.0, 0.5);
const B_CONTRAST: (f32, f32) = (0.0, 0.9);
const B_BRIGHT: (f32, f32) = (0.0, 0.5);
const B_GAMMA: (f32, f32) = (0.0, 2.0);
const B_GLINT_R: (f32, f32) = (0.2, 4.0);

/// How a knob is read from a (partial) config. Besides their full forms, `[lo, hi]` ranges
/// accept a single number (a fixed value) and an [`AngleDist`] accepts a number (fixed angle) or a
/// `[min, max]` pair (uniform).
trait Knob: Sized {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

macro_rules! plain_knob {
    ($($t:ty),*) => {$(
        impl Knob for $t {
            fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$t>::deserialize(d)
            }
        }
    )*};
}
plain_knob!(f32, bool, Domain);

fn read_knob<'de, D: Deserializer<'de>, T: Knob>(d: D) -> Result<Option<T>, D::Error> {
    T::read(d).map(Some)
}

/// Accepts a number `v` (→ `Fixed(v)`), a `[lo, hi]` pair, or (for angles) a table.
enum NumOrPair<T> {
    Fixed(f32),
    Pair([f32; 2]),
    Table(T),
}

struct NumOrPairVisitor<T>(std::marker::PhantomData<T>, bool);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for NumOrPairVisitor<T> {
    type Value = NumOrPair<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            f.write_str("a number, a [min, max] pair or a table")
        } else {
            f.write_str("a number or a [lo, hi] pair")
        }
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(NumOrPair::Fixed(v as f32))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(NumOrPair::Fixed(v as f32))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(NumOrPair::Fixed(v as f32))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let lo: f32 = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let hi: f32 = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        if seq.next_element::<f32>()?.is_some() {
            return Err(A::Error::invalid_length(3, &self));
        }
        Ok(NumOrPair::Pair([lo, hi]))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        if !self.1 {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Map,
                &self,
            ));
        }
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(NumOrPair::Table)
    }
}

impl Knob for [f32; 2] {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(NumOrPairVisitor::<AngleDist>(
            std::marker::PhantomData,
            false,
        ))? {
            NumOrPair::Fixed(v) => Ok([v, v]),
            NumOrPair::Pair(p) => Ok(p),
            NumOrPair::Table(_) => Err(serde::de::Error::custom(
                "expected a number or a [lo, hi] pair",
            )),
        }
    }
}

impl Knob for AngleDist {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(NumOrPairVisitor::<AngleDist>(
            std::marker::PhantomData,
            true,
        ))? {
            NumOrPair::Fixed(v) => Ok(AngleDist::uniform(v, v)),
            NumOrPair::Pair([lo, hi]) => Ok(AngleDist::uniform(lo, hi)),
            NumOrPair::Table(t) => Ok(t),
        }
    }
}

/// Declares [`RenderConfig`] and a private all-`Option` twin used to deserialise partial configs
/// on top of a domain preset, from one field list.
macro_rules! render_config {
    ($(#[$sm:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty, )* }) => {
        $(#[$sm])*
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }

        /// Every knob optional: what a partial config overrides on top of its domain preset.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RenderConfigPatch {
            $( #[serde(default, deserialize_with = "read_knob")] $f: Option<$t>, )*
        }

        impl RenderConfigPatch {
            fn apply(self, cfg: &mut $name) {
                $( if let Some(v) = self.$f { cfg.$f = v; } )*
            }
        }
    };
}

render_config! {
    /// Every knob of the procedural eye generator: label distribution, geometry family and the
    /// appearance gap. Build a preset with [`RenderConfig::for_domain`] and override fields; ranges
    /// written `[lo, hi]` are drawn uniformly per image.
    ///
    /// Intensities are on a 0–1 scale (0 black, 1 white) before the final 8-bit quantisation.
    pub struct RenderConfig {
        /// The preset this config started from. Informational for [`render`] (which only reads
        /// the knobs); when deserialising, it selects the preset that fills missing knobs.
        pub domain: Domain,

        // ---- labels ----
        /// Gaze pitch in the camera frame, degrees (positive = looking up). Bounded by ±60°.
        pub gaze_pitch: AngleDist,
        /// Gaze yaw in the camera frame, degrees (positive = looking toward the image left).
        /// Bounded by ±60°.
        pub gaze_yaw: AngleDist,
        /// Head pitch, degrees (positive = face tilted up). Bounded by ±45°.
        pub head_pitch: AngleDist,
        /// Head yaw, degrees (positive = face turned toward the image left). Bounded by ±45°.
        pub head_yaw: AngleDist,
        /// Head roll, degrees (positive = eye region rotated clockwise in the image). Bounded by ±45°.
        pub head_roll: AngleDist,

        // ---- geometry family (keep equal across domains unless the geometry gap is intended) ----
        /// How far head rotation moves the lids relative to the eyeball, as a fraction of the
        /// eyeball radius per unit `sin(angle)` (0 = lids fixed to the eyeball; ~0.87 = rigid
        /// head). Larger values make gaze harder to read from the iris-to-corner offset alone.
        pub head_parallax: f32,
        /// Uniform jitter of the eye (lid-frame centre) position in the crop, ± pixels.
        pub position_jitter_px: f32,
        /// Half the corner-to-corner eye width, pixels, `[lo, hi]`.
        pub eye_half_width_px: [f32; 2],
        /// Eyeball radius relative to the eye half width, `[lo, hi]` (sets how far the iris
        /// travels per degree).
        pub eyeball_radius_rel: [f32; 2],
        /// Iris radius relative to the eyeball radius, `[lo, hi]`.
        pub iris_radius_rel: [f32; 2],
        /// Pupil radius relative to the iris radius, `[lo, hi]`.
        pub pupil_radius_rel: [f32; 2],
        /// Upper-lid apex height above the canthal axis at neutral gaze, relative to the iris
        /// radius, `[lo, hi]` (below 1 the lid covers the top of the iris).
        pub upper_lid_open_rel: [f32; 2],
        /// Lower-lid apex depth below the canthal axis at neutral gaze, relative to the iris
        /// radius, `[lo, hi]`.
        pub lower_lid_open_rel: [f32; 2],
        /// Fraction of the iris' vertical travel that the upper lid follows (lid rises with
        /// upward gaze, drops with downward gaze).
        pub upper_lid_follow: f32,
        /// Fraction of the iris' vertical travel that the lower lid follows.
        pub lower_lid_follow: f32,
        /// Canthal tilt, degrees, `[lo, hi]`: positive puts the outer corner higher.
        pub canthal_tilt_deg: [f32; 2],
        /// `true`: the inner corner (caruncle, nose side) is at the image left, as for a
        /// subject's left eye seen by the camera (unconfirmed against MPIIGaze's flipped crops;
        /// mirror by setting `false`).
        pub inner_corner_left: bool,

        // ---- appearance ----
        /// Base skin intensity, `[lo, hi]`.
        pub skin_tone: [f32; 2],
        /// Base sclera intensity, `[lo, hi]`.
        pub sclera_tone: [f32; 2],
        /// Base iris intensity, `[lo, hi]` (dark = brown eyes, light = blue/grey eyes).
        pub iris_tone: [f32; 2],
        /// Strength of the radial iris striation texture (0 = flat iris).
        pub iris_texture: f32,
        /// Strength of the skin texture: blotches, mid-scale unevenness and per-pixel pores
        /// (0 = flat-toned skin). Also adds faint blotches to the sclera.
        pub skin_texture: f32,
        /// Maximum relative brightness change of a linear light gradient across the image, in a
        /// random direction (0 = even light; 0.3 = ±30 % at the image edges, scaled per image).
        pub lighting_gradient: f32,
        /// Strength of the shadow the upper lid casts on the eyeball and of the socket shadow
        /// above the lid crease (0 = none).
        pub shadow_strength: f32,
        /// Gaussian blur sigma, pixels, `[lo, hi]` (0 = sharp).
        pub blur_sigma_px: [f32; 2],
        /// Additive Gaussian sensor-noise standard deviation, `[lo, hi]` (0 = noise-free).
        pub noise_std: [f32; 2],
        /// Contrast factor drawn from `1 ± contrast_jitter` (about mid-grey).
        pub contrast_jitter: f32,
        /// Brightness offset drawn from `± brightness_jitter`.
        pub brightness_jitter: f32,
        /// Gamma drawn log-uniformly from `[1/(1+gamma_jitter), 1+gamma_jitter]`.
        pub gamma_jitter: f32,
        /// Probability that an image has corneal glints (one, or two with probability 1/3).
        pub glint_prob: f32,
        /// Glint radius, pixels, `[lo, hi]`.
        pub glint_radius_px: [f32; 2],
        /// Darkness of the eyelashes along the upper (and, weaker, lower) lid (0 = none).
        pub eyelash_strength: f32,
    }
}

impl Default for RenderConfig {
    /// The [`Domain::Synthetic`] preset.
    fn default() -> Self {
        RenderConfig::for_domain(Domain::Synthetic)
    }
}

impl<'de> Deserialize<'de> for RenderConfig {
    /// Reads a partial config: missing knobs come from the preset of `domain` (default
    /// synthetic); unknown keys and invalid values are errors.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let patch = RenderConfigPatch::deserialize(deserializer)?;
        let mut cfg = RenderConfig::for_domain(patch.domain.unwrap_or_default());
        patch.apply(&mut cfg);
        cfg.validate().map_err(serde::de::Error::custom)?;
        Ok(cfg)
    }
}

impl RenderConfig {
    /// The preset of a domain. Both presets share the geometry family; they differ in the label
    /// distribution and the appearance knobs (see the module docs).
    pub fn for_domain(domain: Domain) -> Self {
        // Geometry family, identical in both domains.
        let mut cfg = RenderConfig {
            domain,
            gaze_pitch: AngleDist::uniform(-30.0, 30.0),
            gaze_yaw: AngleDist::uniform(-40.0, 40.0),
            head_pitch: AngleDist::uniform(-15.0, 15.0),
            head_yaw: AngleDist::uniform(-15.0, 15.0),
            head_roll: AngleDist::uniform(-6.0, 6.0),
            head_parallax: 0.35,
            position_jitter_px: 1.5,
            eye_half_width_px: [17.5, 20.5],
            eyeball_radius_rel: [0.78, 0.86],
            iris_radius_rel: [0.46, 0.52],
            pupil_radius_rel: [0.28, 0.5],
            upper_lid_open_rel: [0.75, 1.0],
            lower_lid_open_rel: [0.95, 1.2],
            upper_lid_follow: 0.8,
            lower_lid_follow: 0.3,
            canthal_tilt_deg: [2.0, 8.0],
            inner_corner_left: true,
            // Synthetic appearance: clean, sharp, even light.
            skin_tone: [0.55, 0.75],
            sclera_tone: [0.86, 0.96],
            iris_tone: [0.2, 0.5],
            iris_texture: 0.6,
            skin_texture: 0.0,
            lighting_gradient: 0.0,
            shadow_strength: 0.15,
            blur_sigma_px: [0.0, 0.0],
            noise_std: [0.0, 0.0],
            contrast_jitter: 0.0,
            brightness_jitter: 0.0,
            gamma_jitter: 0.0,
            glint_prob: 0.0,
            glint_radius_px: [0.6, 1.2],
            eyelash_strength: 0.0,
        };
        if domain == Domain::RealLike {
            cfg.gaze_pitch = AngleDist::normal(-4.0, 9.0, -20.0, 20.0);
            cfg.gaze_yaw = AngleDist::normal(0.0, 11.0, -25.0, 25.0);
            cfg.head_pitch = AngleDist::normal(0.0, 5.0, -12.0, 12.0);
            cfg.head_yaw = AngleDist::normal(0.0, 6.0, -12.0, 12.0);
            cfg.head_roll = AngleDist::normal(0.0, 3.0, -6.0, 6.0);
            cfg.skin_tone = [0.45, 0.7];
            cfg.sclera_tone = [0.66, 0.88];
            cfg.iris_tone = [0.15, 0.42];
            cfg.skin_texture = 0.14;
            cfg.lighting_gradient = 0.35;
            cfg.shadow_strength = 0.45;
            cfg.blur_sigma_px = [0.4, 0.9];
            cfg.noise_std = [0.01, 0.035];
            cfg.contrast_jitter = 0.25;
            cfg.brightness_jitter = 0.08;
            cfg.gamma_jitter = 0.3;
            cfg.glint_prob = 0.7;
            cfg.glint_radius_px = [0.6, 1.3];
            cfg.eyelash_strength = 0.55;
        }
        cfg
    }

    /// Checks every knob against its valid range.
    pub fn validate(&self) -> Result<(), RenderError> {
        self.gaze_pitch.validate("gaze_pitch", GAZE_BOUND_DEG)?;
        self.gaze_yaw.validate("gaze_yaw", GAZE_BOUND_DEG)?;
        self.head_pitch.validate("head_pitch", HEAD_BOUND_DEG)?;
        self.head_yaw.validate("head_yaw", HEAD_BOUND_DEG)?;
        self.head_roll.validate("head_roll", HEAD_BOUND_DEG)?;
        check("head_parallax", self.head_parallax, B_PARALLAX)?;
        check("position_jitter_px", self.position_jitter_px, B_JITTER)?;
        check2("eye_half_width_px", self.eye_half_width_px, B_HALF_WIDTH)?;
        check2("eyeball_radius_rel", self.eyeball_radius_rel, B_EYEBALL)?;
        check2("iris_radius_rel", self.iris_radius_rel, B_IRIS)?;
        check2("pupil_radius_rel", self.pupil_radius_rel, B_PUPIL)?;
        check2("upper_lid_open_rel", self.upper_lid_open_rel, B_LID_OPEN)?;
        check2("lower_lid_open_rel", self.lower_lid_open_rel, B_LID_OPEN)?;
        check("upper_lid_follow", self.upper_lid_follow, B_LID_FOLLOW)?;
        check("lower_lid_follow", self.lower_lid_follow, B_LID_FOLLOW)?;
        check2("canthal_tilt_deg", self.canthal_tilt_deg, B_TILT)?;
        check2("skin_tone", self.skin_tone, B_TONE)?;
        check2("sclera_tone", self.sclera_tone, B_TONE)?;
        check2("iris_tone", self.iris_tone, B_TONE)?;
        check("iris_texture", self.iris_texture, B_IRIS_TEX)?;
        check("skin_texture", self.skin_texture, B_UNIT)?;
        check("lighting_gradient", self.lighting_gradient, B_LIGHT)?;
        check("shadow_strength", self.shadow_strength, B_UNIT)?;
        check2("blur_sigma_px", self.blur_sigma_px, B_BLUR)?;
        check2("noise_std", self.noise_std, B_NOISE)?;
        check("contrast_jitter", self.contrast_jitter, B_CONTRAST)?;
        check("brightness_jitter", self.brightness_jitter, B_BRIGHT)?;
        check("gamma_jitter", self.gamma_jitter, B_GAMMA)?;
        check("glint_prob", self.glint_prob, B_UNIT)?;
        check2("glint_radius_px", self.glint_radius_px, B_GLINT_R)?;
        check("eyelash_strength", self.eyelash_strength, B_UNIT)?;
        Ok(())
    }
}

fn check(field: &'static str, v: f32, (lo, hi): (f32, f32)) -> Result<(), RenderError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(RenderError::InvalidConfig {
            field,
            reason: format!("{v} is not in [{lo}, {hi}]"),
        })
    }
}

fn check2(field: &'static str, r: [f32; 2], b: (f32, f32)) -> Result<(), RenderError> {
    check(field, r[0], b)?;
    check(field, r[1], b)?;
    if r[0] > r[1] {
        return Err(RenderError::InvalidConfig {
            field,
            reason: format!("range [{}, {}] has lo > hi", r[0], r[1]),
        });
    }
    Ok(())
}

/// Clamps a knob into `[lo, hi]`; non-finite values become `lo`.
fn san(v: f32, lo: f32, hi: f32) -> f32 {
    if v.is_finite() { v.clamp(lo, hi) } else { lo }
}

fn san_b(v: f32, (lo, hi): (f32, f32)) -> f32 {
    san(v, lo, hi)
}

/// Clamps and orders a `[lo, hi]` knob.
fn san2(r: [f32; 2], lo: f32, hi: f32) -> [f32; 2] {
    let (a, b) = (san(r[0], lo, hi), san(r[1], lo, hi));
    [a.min(b), a.max(b)]
}

fn san2_b(r: [f32; 2], (lo, hi): (f32, f32)) -> [f32; 2] {
    san2(r, lo, hi)
}

/// SplitMix64: tiny, fast, good enough for textures and per-pixel noise; seeded from the caller's
/// RNG so everything stays reproducible.
struct Fast(u64);

impl Fast {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform in `[-1, 1)`.
    fn signed(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }

    /// Uniform in `[r[0], r[1]]`.
    fn range(&mut self, r: [f32; 2]) -> f32 {
        r[0] + (r[1] - r[0]) * self.unit()
    }

    /// Standard normal (Box–Muller), for labels.
    fn gauss(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / 9_007_199_254_740_992.0);
        let u2 = self.unit() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Approximately standard normal (Irwin–Hall of four 16-bit uniforms), for pixel noise.
    fn gauss_fast(&mut self) -> f32 {
        let x = self.next_u64();
        let s = (x & 0xFFFF) + ((x >> 16) & 0xFFFF) + ((x >> 32) & 0xFFFF) + (x >> 48);
        (s as f32 * (1.0 / 65_536.0) - 2.0) * 1.732_050_8
    }
}

/// Per-image geometry: everything the labels and landmarks depend on.
struct Geometry {
    gaze: [f32; 3],
    head_pose: [f32; 3],
    /// Lid-frame centre (midpoint of the canthal axis) in image pixels.
    lc: [f32; 2],
    /// Eyeball centre in image pixels.
    ec: [f32; 2],
    /// Distance of the iris plane from the eyeball centre.
    d_iris: f32,
    r_iris: f32,
    r_pupil: f32,
    /// Projected half width of the lid frame (after head-yaw squash).
    wh: f32,
    up_open: f32,
    lo_open: f32,
    /// Vertical offset of the outer corner above the centre (canthal tilt), pixels.
    tilt_px: f32,
    skew_up: f32,
    skew_lo: f32,
    /// +1 when the inner corner is at lid-frame `t = -1` (image left before roll), else -1.
    side: f32,
    cos_roll: f32,
    sin_roll: f32,
    crease_h: f32,
}

impl Geometry {
    fn sample(cfg: &RenderConfig, r: &mut Fast) -> Geometry {
        let pitch = cfg.gaze_pitch.sample(GAZE_BOUND_DEG, r);
        let yaw = cfg.gaze_yaw.sample(GAZE_BOUND_DEG, r);
        let hp = cfg.head_pitch.sample(HEAD_BOUND_DEG, r);
        let hy = cfg.head_yaw.sample(HEAD_BOUND_DEG, r);
        let hr = cfg.head_roll.sample(HEAD_BOUND_DEG, r);
        let half_w = r.range(san2_b(cfg.eye_half_width_px, B_HALF_WIDTH));
        let r_eye = half_w * r.range(san2_b(cfg.eyeball_radius_rel, B_EYEBALL));
        let r_iris = r_eye * r.range(san2_b(cfg.iris_radius_rel, B_IRIS));
        let r_pupil = r_iris * r.range(san2_b(cfg.pupil_radius_rel, B_PUPIL));
        let up_rel = r.range(san2_b(cfg.upper_lid_open_rel, B_LID_OPEN));
        let lo_rel = r.range(san2_b(cfg.lower_lid_open_rel, B_LID_OPEN));
        let tilt = r.range(san2_b(cfg.canthal_tilt_deg, B_TILT)).to_radians();
        let jit = san_b(cfg.position_jitter_px, B_JITTER);
        let (jx, jy) = (jit * r.signed(), jit * r.signed());
        let skew_up = -0.15 + 0.1 * r.signed();
        let skew_lo = 0.2 + 0.1 * r.signed();
        let crease_h = r.range([3.5, 5.5]);

        let gaze = from_pitch_yaw(pitch.to_radians(), yaw.to_radians());
        let d_iris = (r_eye * r_eye - r_iris * r_iris).max(0.0).sqrt();
        let (hpr, hyr, hrr) = (hp.to_radians(), hy.to_radians(), hr.to_radians());
        let lc = [W as f32 * 0.5 + jx, H as f32 * 0.5 + jy];
        // Positive head yaw/pitch moves the front of the face (the lids) toward the image
        // left/top more than the eyeball centre behind it.
        let k = san_b(cfg.head_parallax, B_PARALLAX) * r_eye;
        let ec = [lc[0] + k * hyr.sin(), lc[1] + k * hpr.sin()];
        // Eye-in-head pitch drives the lids.
        let eye_pitch = (pitch - hp).to_radians().clamp(-0.8, 0.8);
        let travel = d_iris * eye_pitch.sin();
        let up_follow = san_b(cfg.upper_lid_follow, B_LID_FOLLOW);
        let lo_follow = san_b(cfg.lower_lid_follow, B_LID_FOLLOW);
        let vsq = hpr.cos();
        let up_open = ((up_rel * r_iris + up_follow * travel) * vsq).clamp(1.0, 16.0);
        let lo_open = ((lo_rel * r_iris - lo_follow * travel) * vsq).clamp(2.0, 14.0);
        let wh = half_w * hyr.cos();
        let side = if cfg.inner_corner_left { 1.0 } else { -1.0 };
        // The upper lid's apex follows the iris sideways a little.
        let iris_dx = d_iris * gaze[0] + ec[0] - lc[0];
        let skew_up = (skew_up + 0.3 * side * iris_dx / wh).clamp(-0.6, 0.6);
        Geometry {
            gaze,
            head_pose: [hp, hy, hr],
            lc,
            ec,
            d_iris,
            r_iris,
            r_pupil,
            wh,
            up_open,
            lo_open,
            tilt_px: wh * tilt.tan(),
            skew_up,
            skew_lo,
            side,
            cos_roll: hrr.cos(),
            sin_roll: hrr.sin(),
            crease_h,
        }
    }

    /// Upper lid at lid-frame `t ∈ [-1, 1]`: `(v, dv/du)`.
    #[inline]
    fn upper(&self, t: f32) -> (f32, f32) {
        let st = self.skew_up * self.side;
        let f = (1.0 - t * t) * (1.0 + st * t);
        let df = -2.0 * t * (1.0 + st * t) + (1.0 - t * t) * st;
        let v = -self.tilt_px * self.side * t - self.up_open * f;
        (v, (-self.tilt_px * self.side - self.up_open * df) / self.wh)
    }

    /// Lower lid at lid-frame `t ∈ [-1, 1]`: `(v, dv/du)`.
    #[inline]
    fn lower(&self, t: f32) -> (f32, f32) {
        let st = self.skew_lo * self.side;
        let f = (1.0 - t * t) * (1.0 + st * t);
        let df = -2.0 * t * (1.0 + st * t) + (1.0 - t * t) * st;
        let v = -self.tilt_px * self.side * t + self.lo_open * f;
        (v, (-self.tilt_px * self.side + self.lo_open * df) / self.wh)
    }

    /// Lid-frame `(u, v)` to image pixels.
    fn to_image(&self, u: f32, v: f32) -> [f32; 2] {
        [
            self.lc[0] + self.cos_roll * u - self.sin_roll * v,
            self.lc[1] + self.sin_roll * u + self.cos_roll * v,
        ]
    }

    fn iris_centre(&self) -> [f32; 2] {
        [
            self.ec[0] + self.d_iris * self.gaze[0],
            self.ec[1] + self.d_iris * self.gaze[1],
        ]
    }

    /// Left corner, upper lid at t = -0.5, 0, 0.5, right corner, lower lid at t = 0.5, 0, -0.5,
    /// iris centre (lid-frame `t` runs from the image-left corner to the image-right corner
    /// before roll).
    fn landmarks(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(2 * LANDMARK_COUNT);
        let mut push = |p: [f32; 2]| out.extend_from_slice(&p);
        push(self.to_image(-self.wh, self.upper(-1.0).0));
        for t in [-0.5f32, 0.0, 0.5] {
            push(self.to_image(t * self.wh, self.upper(t).0));
        }
        push(self.to_image(self.wh, self.upper(1.0).0));
        for t in [0.5f32, 0.0, -0.5] {
            push(self.to_image(t * self.wh, self.lower(t).0));
        }
        push(self.iris_centre());
        out
    }
}

const LOW_CELL: f32 = 8.0;
const LOW_W: usize = 9;
const LOW_H: usize = 7;
const MID_CELL: f32 = 3.0;
const MID_W: usize = 21;
const MID_H: usize = 14;

/// Per-image appearance draws.
struct Appearance {
    skin: f32,
    sclera: f32,
    iris: f32,
    iris_tex: f32,
    stri_n: [f32; 3],
    stri_ph: [f32; 3],
    stri_a: [f32; 3],
    skin_tex: f32,
    low: [f32; LOW_W * LOW_H],
    mid: [f32; MID_W * MID_H],
    light: [f32; 2],
    shadow: f32,
    blur: f32,
    noise: f32,
    contrast: f32,
    brightness: f32,
    gamma: f32,
    /// `(dx, dy)` from the iris centre, radius, amplitude; radius 0 = absent.
    glints: [[f32; 4]; 2],
    lash: f32,
    lash_ph: [f32; 2],
    lash_spacing: f32,
    /// Seed for per-pixel noise and pores.
    pixel_seed: u64,
}

impl Appearance {
    fn sample(cfg: &RenderConfig, g: &Geometry, r: &mut Fast) -> Appearance {
        let skin = r.range(san2_b(cfg.skin_tone, B_TONE));
        let sclera = r.range(san2_b(cfg.sclera_tone, B_TONE));
        let iris = r.range(san2_b(cfg.iris_tone, B_TONE));
        let mut stri_n = [0.0; 3];
        let mut stri_ph = [0.0; 3];
        let mut stri_a = [0.0; 3];
        for i in 0..3 {
            // Integer frequencies keep the pattern continuous across ±π.
            stri_n[i] = (7 + (r.next_u64() % 18) as u32) as f32;
            stri_ph[i] = r.unit() * std::f32::consts::TAU;
            stri_a[i] = r.range([0.5, 1.0]) / 2.2;
        }
        let mut low = [0.0; LOW_W * LOW_H];
        low.iter_mut().for_each(|v| *v = r.signed());
        let mut mid = [0.0; MID_W * MID_H];
        mid.iter_mut().for_each(|v| *v = r.signed());
        let angle = r.unit() * std::f32::consts::TAU;
        let strength = san_b(cfg.lighting_gradient, B_LIGHT) * r.range([0.3, 1.0]);
        let light = [strength * angle.cos(), strength * angle.sin()];
        let blur = r.range(san2_b(cfg.blur_sigma_px, B_BLUR));
        let noise = r.range(san2_b(cfg.noise_std, B_NOISE));
        let contrast = 1.0 + san_b(cfg.contrast_jitter, B_CONTRAST) * r.signed();
        let brightness = san_b(cfg.brightness_jitter, B_BRIGHT) * r.signed();
        let gamma = (san_b(cfg.gamma_jitter, B_GAMMA).ln_1p() * r.signed()).exp();
        let mut glints = [[0.0; 4]; 2];
        let has_glint = r.unit() < san_b(cfg.glint_prob, B_UNIT);
        let two = r.unit() < 1.0 / 3.0;
        // One light position per image; a second glint sits beside the first (two lamps).
        let ga = r.unit() * std::f32::consts::TAU;
        let gd = g.r_iris * r.range([0.1, 0.55]);
        let grange = san2_b(cfg.glint_radius_px, B_GLINT_R);
        for (i, gl) in glints.iter_mut().enumerate() {
            let rad = r.range(grange);
            let amp = r.range([0.45, 0.85]);
            let off = if i == 0 { 0.0 } else { r.range([1.5, 3.0]) };
            if has_glint && (i == 0 || two) {
                *gl = [
                    gd * ga.cos() + off,
                    gd * ga.sin(),
                    rad * if i == 0 { 1.0 } else { 0.7 },
                    amp,
                ];
            }
        }
        Appearance {
            skin,
            sclera,
            iris,
            iris_tex: san_b(cfg.iris_texture, B_IRIS_TEX),
            stri_n,
            stri_ph,
            stri_a,
            skin_tex: san_b(cfg.skin_texture, B_UNIT),
            low,
            mid,
            light,
            shadow: san_b(cfg.shadow_strength, B_UNIT),
            blur,
            noise,
            contrast,
            brightness,
            gamma,
            glints,
            lash: san_b(cfg.eyelash_strength, B_UNIT),
            lash_ph: [
                r.unit() * std::f32::consts::TAU,
                r.unit() * std::f32::consts::TAU,
            ],
            lash_spacing: r.range([1.1, 1.6]),
            pixel_seed: r.next_u64(),
        }
    }
}

/// Adds `weight ×` bilinear value noise (a `gw`-wide grid of random values in `[-1, 1]` with
/// `cell`-pixel spacing) to `out`, row by row.
fn add_value_noise(out: &mut [f32; W * H], grid: &[f32], gw: usize, cell: f32, weight: f32) {
    let gh = grid.len() / gw;
    let mut xs = [(0usize, 0.0f32); W];
    for (x, e) in xs.iter_mut().enumerate() {
        let f = (x as f32 + 0.5) / cell;
        let i = (f as usize).min(gw - 2);
        *e = (i, (f - i as f32).min(1.0));
    }
    let mut row = [0.0f32; 32];
    for (y, orow) in out.chunks_exact_mut(W).enumerate() {
        let f = (y as f32 + 0.5) / cell;
        let iy = (f as usize).min(gh - 2);
        let ay = (f - iy as f32).min(1.0);
        let (top, bot) = (
            &grid[iy * gw..(iy + 1) * gw],
            &grid[(iy + 1) * gw..(iy + 2) * gw],
        );
        for ((r, &t), &b) in row.iter_mut().zip(top).zip(bot) {
            *r = t + (b - t) * ay;
        }
        for (o, &(ix, ax)) in orow.iter_mut().zip(xs.iter()) {
            *o += weight * (row[ix] + (row[ix + 1] - row[ix]) * ax);
        }
    }
}

/// `sin` to about 1e-3, for textures (cheap at the crate's opt-level 1; valid for |x| < 6000).
#[inline]
fn fast_sin(x: f32) -> f32 {
    use std::f32::consts::{PI, TAU};
    let q = x * (1.0 / TAU) + 0.5;
    let k = (q + 1024.0) as i32 - 1024; // floor(q) for |q| < 1024
    let x = x - TAU * k as f32; // in [-π, π)
    let x = x.clamp(-PI, PI);
    let y = (4.0 / PI) * x - (4.0 / (PI * PI)) * x * x.abs();
    0.225 * (y * y.abs() - y) + y
}

/// `atan2` to about 1e-5 rad, for textures.
#[inline]
fn fast_atan2(y: f32, x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, PI};
    let (ax, ay) = (x.abs(), y.abs());
    let a = ax.min(ay) / ax.max(ay).max(1e-12);
    let s = a * a;
    let mut r = ((-0.046_496_475 * s + 0.159_314_22) * s - 0.327_622_76) * s * a + a;
    if ay > ax {
        r = FRAC_PI_2 - r;
    }
    if x < 0.0 {
        r = PI - r;
    }
    if y < 0.0 { -r } else { r }
}

#[inline]
fn clamp01(v: f32) -> f32 {
    v.clamp(0.0, 1.0)
}

/// Renders one labelled eye sample. Takes exactly two `u64`s from `rng`; deterministic for a given
/// RNG state. Never panics: out-of-range knobs are clamped into their valid ranges.
pub fn render<R: Rng + ?Sized>(cfg: &RenderConfig, rng: &mut R) -> EyeSample {
    let mut geo_rng = Fast(rng.random::<u64>());
    let mut app_rng = Fast(rng.random::<u64>());
    let g = Geometry::sample(cfg, &mut geo_rng);
    let a = Appearance::sample(cfg, &g, &mut app_rng);
    let image = paint(&g, &a);
    EyeSample {
        image,
        gaze: g.gaze,
        head_pose: g.head_pose,
        landmarks: Some(g.landmarks()),
    }
}

/// Draws the image from the sampled geometry and appearance.
fn paint(g: &Geometry, a: &Appearance) -> GrayImage {
    let mut buf = [0.0f32; W * H];
    let mut inside_buf = [0.0f32; W * H];
    let mut px_rng = Fast(a.pixel_seed);
    let [gx, gy, gz] = g.gaze;
    // |g_z| ≥ cos 60°·cos 60° for valid configs; keep away from 0 for clamped ones.
    let gz = if gz > -0.2 { -0.2 } else { gz };
    let (gxz, gyz) = (gx / gz, gy / gz);
    let ic = g.iris_centre();
    let (ri, rp, d) = (g.r_iris, g.r_pupil, g.d_iris);
    let sclera_r2 = 1.0 / (1.3 * g.wh).powi(2);
    let inv_wh = 1.0 / g.wh;
    let lash_len = 3.5;
    let lash_k = std::f32::consts::TAU / a.lash_spacing;
    let (cx, cy) = (W as f32 * 0.5, H as f32 * 0.5);
    let light_scale = 1.0 / cx;
    // Low- and mid-frequency blotches shared by the skin and (weaker) the sclera.
    let mut tex = [0.0f32; W * H];
    if a.skin_tex > 0.0 {
        add_value_noise(&mut tex, &a.low, LOW_W, LOW_CELL, 0.6 * a.skin_tex);
        add_value_noise(&mut tex, &a.mid, MID_W, MID_CELL, 0.4 * a.skin_tex);
    }

    for y in 0..H {
        let py = y as f32 + 0.5;
        for x in 0..W {
            let px = x as f32 + 0.5;
            // Lid frame.
            let (qx, qy) = (px - g.lc[0], py - g.lc[1]);
            let u = g.cos_roll * qx + g.sin_roll * qy;
            let v = -g.sin_roll * qx + g.cos_roll * qy;
            let t = u * inv_wh;
            let ts = t * g.side;
            let (v_up, k_up) = g.upper(t);
            let (v_lo, k_lo) = g.lower(t);
            let d_up = (v - v_up) / (1.0 + k_up * k_up).sqrt();
            let d_lo = (v_lo - v) / (1.0 + k_lo * k_lo).sqrt();
            let inside = if t.abs() < 1.0 {
                clamp01(0.5 + d_up.min(d_lo))
            } else {
                0.0
            };

            let mut eye = 0.0;
            if inside > 0.0 {
                let (dx, dy) = (px - g.ec[0], py - g.ec[1]);
                // Sclera, shaded as a sphere, darker toward the corners.
                let r2 = ((dx * dx + dy * dy) * sclera_r2).min(1.0);
                let mut scl = a.sclera * (1.0 - 0.32 * r2);
                scl *= 1.0 + 0.35 * tex[y * W + x];
                // Caruncle at the inner corner.
                let wc = clamp01((-ts - 0.72) * 5.0);
                scl += (a.skin * 0.85 - scl) * wc;
                eye = scl;
                // Iris plane intersection: ρ is the radius in the iris plane.
                let tt = (d - dx * gx - dy * gy) / gz;
                let rho2 = (dx * dx + dy * dy + tt * tt - d * d).max(0.0);
                if rho2 < (ri + 3.0) * (ri + 3.0) {
                    let rho = rho2.sqrt();
                    // |∇ρ| in image pixels, for anti-aliasing the foreshortened edges.
                    let (ex, ey) = (dx - tt * gxz, dy - tt * gyz);
                    let grad = ((ex * ex + ey * ey).sqrt() / rho.max(1e-3)).clamp(1.0, 5.0);
                    let ci = clamp01(0.5 + (ri - rho) / grad);
                    let cp = clamp01(0.5 + (rp - rho) / grad);
                    if ci > 0.0 {
                        let rr = rho / ri;
                        let phi = fast_atan2(py - ic[1], px - ic[0]);
                        let mut s = 0.0;
                        for k in 0..3 {
                            s += a.stri_a[k] * fast_sin(a.stri_n[k] * phi + a.stri_ph[k]);
                        }
                        let limbus = clamp01((rr - 0.72) * 3.6);
                        let collar = (1.0 - ((rr - 0.5) * 6.0).abs()).max(0.0);
                        let iris = a.iris
                            * (1.0 + a.iris_tex * 0.35 * s * (0.3 + 0.7 * rr))
                            * (1.0 - 0.5 * limbus * limbus)
                            * (1.0 + 0.15 * collar);
                        let pupil = 0.035;
                        eye = scl * (1.0 - ci) + iris * (ci - cp) + pupil * cp;
                    }
                }
                // Shadow of the upper lid on the eyeball.
                let sh = (1.0 - d_up / 3.5).clamp(0.0, 1.0);
                eye *= 1.0 - a.shadow * sh * sh;
            }

            let mut skin = 0.0;
            if inside < 1.0 {
                let mut m = 1.0;
                if t.abs() < 1.15 {
                    let w_t = clamp01((1.15 - t.abs()) * 4.0);
                    let above = -d_up;
                    if above > -1.0 {
                        // Dark lid margin (lash line), crease, and the lid skin between them.
                        m -= 0.3 * w_t * clamp01(1.0 - above / 1.4);
                        let cpos = g.crease_h * (1.0 - 0.5 * t * t);
                        m -= 0.2 * w_t * (1.0 - (above - cpos).abs() / 1.3).max(0.0);
                        if above > 1.4 && above < cpos {
                            m += 0.05 * w_t;
                        }
                        m -= a.shadow * 0.3 * w_t * clamp01((above - cpos) / 6.0);
                    }
                    let below = -d_lo;
                    if below > -1.0 {
                        // Lower-lid rim highlight and a faint shadow below it.
                        m += 0.06 * w_t * (1.0 - (below - 0.6).abs() / 0.8).max(0.0);
                        m -= 0.06 * w_t * (1.0 - (below - 5.0).abs() / 2.5).max(0.0);
                    }
                }
                let mut tx = tex[y * W + x];
                if a.skin_tex > 0.0 {
                    // Pores: per-pixel grain.
                    tx += a.skin_tex * 0.3 * px_rng.signed();
                }
                skin = a.skin * m * (1.0 + tx);
            }

            let mut val = inside * eye + (1.0 - inside) * skin;

            // Eyelashes: strokes rooted on the upper lid, fanning toward the outer corner.
            if a.lash > 0.0 && t.abs() < 1.0 {
                let wl =
                    clamp01((ts + 0.85) * 2.0) * clamp01((1.02 - ts) * 4.0) * (0.65 + 0.35 * ts);
                let above = -d_up;
                if above > -0.8 && above < lash_len {
                    let slant = g.side * (0.2 + 0.8 * ts.max(0.0));
                    let root = u - slant * above.max(0.0);
                    let wobble = 0.9 * fast_sin(0.37 * root + a.lash_ph[1]);
                    let c = 0.5 + 0.5 * fast_sin(lash_k * root + a.lash_ph[0] + wobble);
                    let c = c * c;
                    let fall = if above > 0.0 {
                        1.0 - above / lash_len
                    } else {
                        1.0 + above / 0.8
                    };
                    val *= 1.0 - a.lash * wl * (0.3 + 0.7 * c) * fall;
                }
                let below = -d_lo;
                if below > -0.5 && below < 1.6 {
                    let c = 0.5 + 0.5 * fast_sin(lash_k * 1.3 * u + a.lash_ph[1]);
                    let fall = if below > 0.0 {
                        1.0 - below / 1.6
                    } else {
                        1.0 + below / 0.5
                    };
                    val *= 1.0 - 0.35 * a.lash * wl * c * c * fall;
                }
            }

            // Uneven light.
            val *= 1.0 + (a.light[0] * (px - cx) + a.light[1] * (py - cy)) * light_scale;
            buf[y * W + x] = val;
            inside_buf[y * W + x] = inside;
        }
    }

    // Corneal glints (occluded by the lids).
    for gl in &a.glints {
        let [ox, oy, rad, amp] = *gl;
        if rad <= 0.0 {
            continue;
        }
        let (gcx, gcy) = (ic[0] + ox, ic[1] + oy);
        let x0 = (gcx - rad - 1.0).floor().max(0.0) as usize;
        let y0 = (gcy - rad - 1.0).floor().max(0.0) as usize;
        let x1 = ((gcx + rad + 2.0).max(0.0) as usize).min(W);
        let y1 = ((gcy + rad + 2.0).max(0.0) as usize).min(H);
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - gcx, y as f32 + 0.5 - gcy);
                let cov = clamp01(0.5 + rad - (dx * dx + dy * dy).sqrt());
                let i = y * W + x;
                buf[i] += amp * cov * inside_buf[i] * (1.0 - 0.5 * buf[i]).max(0.0);
            }
        }
    }

    if a.blur > 0.05 {
        gaussian_blur(&mut buf, a.blur);
    }

    // Tone curve, then sensor noise, then 8-bit quantisation.
    const LUT_N: usize = 128;
    let mut lut = [0.0f32; LUT_N + 1];
    let use_lut = (a.gamma - 1.0).abs() > 1e-4;
    if use_lut {
        for (i, l) in lut.iter_mut().enumerate() {
            *l = (i as f32 / LUT_N as f32).powf(a.gamma);
        }
    }
    let mut out = vec![0u8; W * H];
    for (o, &v) in out.iter_mut().zip(buf.iter()) {
        let mut v = clamp01((v - 0.5) * a.contrast + 0.5 + a.brightness);
        if use_lut {
            let f = v * LUT_N as f32;
            let i = (f as usize).min(LUT_N - 1);
            v = lut[i] + (lut[i + 1] - lut[i]) * (f - i as f32);
        }
        if a.noise > 0.0 {
            v += a.noise * px_rng.gauss_fast();
        }
        *o = (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
    }
    GrayImage::from_raw(EYE_W, EYE_H, out).unwrap_or_else(|| GrayImage::new(EYE_W, EYE_H))
}

/// Separable Gaussian blur with clamped edges, in place.
fn gaussian_blur(buf: &mut [f32; W * H], sigma: f32) {
    const MAX_R: usize = 7;
    let r = ((2.5 * sigma).ceil() as usize).clamp(1, MAX_R);
    let mut kernel = [0.0f32; 2 * MAX_R + 1];
    let mut sum = 0.0;
    for (i, kv) in kernel.iter_mut().enumerate().take(2 * r + 1) {
        let x = i as f32 - r as f32;
        *kv = (-x * x / (2.0 * sigma * sigma)).exp();
        sum += *kv;
    }
    let k = &mut kernel[..2 * r + 1];
    k.iter_mut().for_each(|v| *v /= sum);
    let k = &*k;
    // Horizontal pass through an edge-padded row.
    let mut tmp = [0.0f32; W * H];
    let mut padded = [0.0f32; W + 2 * MAX_R];
    for (row, out) in buf.chunks_exact(W).zip(tmp.chunks_exact_mut(W)) {
        padded[r..r + W].copy_from_slice(row);
        padded[..r].fill(row[0]);
        padded[r + W..2 * r + W].fill(row[W - 1]);
        for (x, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (p, kv) in padded[x..x + k.len()].iter().zip(k) {
                acc += p * kv;
            }
            *o = acc;
        }
    }
    // Vertical pass: whole rows at a time.
    for (y, out) in buf.chunks_exact_mut(W).enumerate() {
        out.fill(0.0);
        for (j, &kv) in k.iter().enumerate() {
            let yi = (y + j).saturating_sub(r).min(H - 1);
            for (o, s) in out.iter_mut().zip(&tmp[yi * W..(yi + 1) * W]) {
                *o += kv * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::eyes::pitch_yaw;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn sample(cfg: &RenderConfig, seed: u64) -> EyeSample {
        render(cfg, &mut StdRng::seed_from_u64(seed))
    }

    fn iris(s: &EyeSample) -> [f32; 2] {
        let l = s.landmarks.as_deref().unwrap_or(&[]);
        [l[2 * IRIS_CENTRE_LANDMARK], l[2 * IRIS_CENTRE_LANDMARK + 1]]
    }

    /// Mean absolute 4-neighbour Laplacian over the interior, in gray levels.
    fn mean_abs_laplacian(img: &GrayImage) -> f64 {
        let (w, h) = img.dimensions();
        let p = |x: u32, y: u32| img.get_pixel(x, y)[0] as f64;
        let mut s = 0.0;
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                s += (4.0 * p(x, y) - p(x - 1, y) - p(x + 1, y) - p(x, y - 1) - p(x, y + 1)).abs();
            }
        }
        s / ((w - 2) * (h - 2)) as f64
    }

    /// `base` with the label distribution (gaze and head pose) of `labels`.
    fn with_labels_of(base: &RenderConfig, labels: &RenderConfig) -> RenderConfig {
        RenderConfig {
            gaze_pitch: labels.gaze_pitch,
            gaze_yaw: labels.gaze_yaw,
            head_pitch: labels.head_pitch,
            head_yaw: labels.head_yaw,
            head_roll: labels.head_roll,
            ..base.clone()
        }
    }

    /// A config whose gaze is fixed (degenerate uniform ranges keep the RNG consumption equal).
    fn fixed_gaze(domain: Domain, pitch: f32, yaw: f32) -> RenderConfig {
        let mut cfg = RenderConfig::for_domain(domain);
        cfg.gaze_pitch = AngleDist::uniform(pitch, pitch);
        cfg.gaze_yaw = AngleDist::uniform(yaw, yaw);
        cfg.head_pitch = AngleDist::uniform(0.0, 0.0);
        cfg.head_yaw = AngleDist::uniform(0.0, 0.0);
        cfg.head_roll = AngleDist::uniform(0.0, 0.0);
        cfg
    }

    #[test]
    fn same_seed_same_sample() {
        for d in [Domain::Synthetic, Domain::RealLike] {
            let cfg = RenderConfig::for_domain(d);
            for seed in 0..20 {
                let (a, b) = (sample(&cfg, seed), sample(&cfg, seed));
                assert_eq!(a.image.as_raw(), b.image.as_raw());
                assert_eq!(a.gaze, b.gaze);
                assert_eq!(a.head_pose, b.head_pose);
                assert_eq!(a.landmarks, b.landmarks);
                assert_eq!(a.image.dimensions(), (EYE_W, EYE_H));
            }
        }
    }

    #[test]
    fn takes_two_words_from_the_rng() {
        let cfg = RenderConfig::for_domain(Domain::RealLike);
        let mut r1 = StdRng::seed_from_u64(5);
        render(&cfg, &mut r1);
        let mut r2 = StdRng::seed_from_u64(5);
        let _: (u64, u64) = (r2.random(), r2.random());
        assert_eq!(r1.random::<u64>(), r2.random::<u64>());
    }

    #[test]
    fn different_seeds_differ() {
        for d in [Domain::Synthetic, Domain::RealLike] {
            let cfg = RenderConfig::for_domain(d);
            let imgs: Vec<_> = (0..10).map(|s| sample(&cfg, s).image.into_raw()).collect();
            for i in 0..imgs.len() {
                for j in i + 1..imgs.len() {
                    assert_ne!(
                        imgs[i], imgs[j],
                        "{d}: seeds {i} and {j} gave the same image"
                    );
                }
            }
        }
    }

    #[test]
    fn labels_are_unit_and_within_ranges() {
        for d in [Domain::Synthetic, Domain::RealLike] {
            let cfg = RenderConfig::for_domain(d);
            let mut rng = StdRng::seed_from_u64(11);
            let (mut pmin, mut pmax, mut ymin, mut ymax) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
            for _ in 0..2000 {
                let s = render(&cfg, &mut rng);
                let n = s.gaze.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((n - 1.0).abs() < 1e-5, "gaze norm {n}");
                assert!(s.gaze[2] < 0.0, "gaze must point toward the camera");
                let (p, y) = pitch_yaw(s.gaze);
                let (p, y) = (p.to_degrees(), y.to_degrees());
                let eps = 1e-3;
                assert!(p >= cfg.gaze_pitch.min_deg - eps && p <= cfg.gaze_pitch.max_deg + eps);
                assert!(y >= cfg.gaze_yaw.min_deg - eps && y <= cfg.gaze_yaw.max_deg + eps);
                let [hp, hy, hr] = s.head_pose;
                assert!(hp >= cfg.head_pitch.min_deg && hp <= cfg.head_pitch.max_deg);
                assert!(hy >= cfg.head_yaw.min_deg && hy <= cfg.head_yaw.max_deg);
                assert!(hr >= cfg.head_roll.min_deg && hr <= cfg.head_roll.max_deg);
                let l = s.landmarks.as_deref().unwrap_or(&[]);
                assert_eq!(l.len(), 2 * LANDMARK_COUNT);
                assert!(l.iter().all(|v| v.is_finite()));
                pmin = pmin.min(p);
                pmax = pmax.max(p);
                ymin = ymin.min(y);
                ymax = ymax.max(y);
            }
            // The draws actually cover most of the configured range.
            let span = |dist: &AngleDist| dist.max_deg - dist.min_deg;
            assert!(
                pmax - pmin > 0.7 * span(&cfg.gaze_pitch),
                "{d}: pitch {pmin}..{pmax}"
            );
            assert!(
                ymax - ymin > 0.7 * span(&cfg.gaze_yaw),
                "{d}: yaw {ymin}..{ymax}"
            );
        }
        // Real-like is narrower than synthetic.
        let (s, r) = (
            RenderConfig::for_domain(Domain::Synthetic),
            RenderConfig::for_domain(Domain::RealLike),
        );
        assert!(
            r.gaze_yaw.max_deg < s.gaze_yaw.max_deg && r.gaze_pitch.max_deg < s.gaze_pitch.max_deg
        );
    }

    #[test]
    fn iris_centre_follows_yaw_and_pitch() {
        for d in [Domain::Synthetic, Domain::RealLike] {
            for seed in 0..20 {
                let at = |p: f32, y: f32| iris(&sample(&fixed_gaze(d, p, y), seed));
                let centre = at(0.0, 0.0);
                // Positive yaw = toward the image left: x decreases, y unchanged.
                let left = at(0.0, 20.0);
                let right = at(0.0, -20.0);
                assert!(left[0] < centre[0] - 2.0 && right[0] > centre[0] + 2.0);
                assert!((left[1] - centre[1]).abs() < 1e-3);
                // Positive pitch = up: y decreases.
                let up = at(15.0, 0.0);
                let down = at(-15.0, 0.0);
                assert!(up[1] < centre[1] - 2.0 && down[1] > centre[1] + 2.0);
                assert!((up[0] - centre[0]).abs() < 1e-3);
                // Monotone in yaw.
                let xs: Vec<f32> = (-4..=4).map(|k| at(0.0, k as f32 * 10.0)[0]).collect();
                assert!(xs.windows(2).all(|w| w[1] < w[0]), "{xs:?}");
            }
        }
    }

    #[test]
    fn pupil_is_drawn_at_the_iris_landmark() {
        // The pupil pixels of a clean, shadow-free render must be centred on the iris-centre
        // landmark, so the image (not only the label) encodes the gaze.
        let mut rng = StdRng::seed_from_u64(3);
        let mut cfg = fixed_gaze(Domain::Synthetic, 0.0, 0.0);
        cfg.gaze_pitch = AngleDist::uniform(-5.0, 15.0);
        cfg.gaze_yaw = AngleDist::uniform(-30.0, 30.0);
        cfg.shadow_strength = 0.0;
        for _ in 0..100 {
            let s = render(&cfg, &mut rng);
            let dark: Vec<(f32, f32)> = s
                .image
                .enumerate_pixels()
                .filter(|(_, _, p)| p[0] < 14)
                .map(|(x, y, _)| (x as f32 + 0.5, y as f32 + 0.5))
                .collect();
            assert!(dark.len() >= 3, "pupil not visible");
            let n = dark.len() as f32;
            let cx = dark.iter().map(|p| p.0).sum::<f32>() / n;
            let cy = dark.iter().map(|p| p.1).sum::<f32>() / n;
            let [ix, iy] = iris(&s);
            let dist = ((cx - ix).powi(2) + (cy - iy).powi(2)).sqrt();
            assert!(
                dist < 0.75,
                "pupil centroid ({cx}, {cy}) vs landmark ({ix}, {iy})"
            );
        }
    }

    #[test]
    fn appearance_knobs_keep_geometry() {
        // Same seed, same label config: identical labels and landmarks across domains.
        let syn = RenderConfig::for_domain(Domain::Synthetic);
        let real = with_labels_of(&RenderConfig::for_domain(Domain::RealLike), &syn);
        for seed in 0..20 {
            let (a, b) = (sample(&syn, seed), sample(&real, seed));
            assert_eq!(a.gaze, b.gaze);
            assert_eq!(a.landmarks, b.landmarks);
        }
    }

    #[test]
    fn real_like_has_more_high_frequency_energy() {
        let syn = RenderConfig::for_domain(Domain::Synthetic);
        let real = with_labels_of(&RenderConfig::for_domain(Domain::RealLike), &syn);
        let n = 64;
        let (mut ls, mut lr) = (0.0, 0.0);
        for seed in 0..n {
            ls += mean_abs_laplacian(&sample(&syn, seed).image);
            lr += mean_abs_laplacian(&sample(&real, seed).image);
        }
        let (ls, lr) = (ls / n as f64, lr / n as f64);
        assert!(
            lr > 1.5 * ls,
            "mean |Laplacian|: synthetic {ls:.2}, real-like {lr:.2}"
        );
        // And turning the noise and texture off removes most of it again.
        let mut clean = real.clone();
        clean.noise_std = [0.0, 0.0];
        clean.skin_texture = 0.0;
        let lc = (0..n)
            .map(|s| mean_abs_laplacian(&sample(&clean, s).image))
            .sum::<f64>()
            / n as f64;
        assert!(lc < lr, "clean {lc:.2} vs real-like {lr:.2}");
    }

    #[test]
    fn synthetic_is_noise_free_and_evenly_lit() {
        let cfg = RenderConfig::for_domain(Domain::Synthetic);
        assert_eq!(cfg.noise_std, [0.0, 0.0]);
        assert_eq!(cfg.blur_sigma_px, [0.0, 0.0]);
        assert_eq!(cfg.lighting_gradient, 0.0);
        assert_eq!(cfg.glint_prob, 0.0);
        let real = RenderConfig::for_domain(Domain::RealLike);
        assert!(
            real.noise_std[0] > 0.0 && real.blur_sigma_px[0] > 0.0 && real.lighting_gradient > 0.0
        );
        assert!(cfg.validate().is_ok() && real.validate().is_ok());
    }

    #[test]
    fn domain_parses_and_prints() {
        assert_eq!("synthetic".parse::<Domain>(), Ok(Domain::Synthetic));
        assert_eq!("real-like".parse::<Domain>(), Ok(Domain::RealLike));
        assert_eq!("Real_Like".parse::<Domain>(), Ok(Domain::RealLike));
        assert!(matches!(
            "real".parse::<Domain>(),
            Err(RenderError::UnknownDomain(_))
        ));
        for d in [Domain::Synthetic, Domain::RealLike] {
            assert_eq!(d.to_string().parse::<Domain>(), Ok(d));
            assert_eq!(serde_json::to_string(&d).ok(), Some(format!("\"{d}\"")));
        }
    }

    #[test]
    fn config_deserialises_partially_over_the_domain_preset() {
        let cfg: RenderConfig =
            serde_json::from_str(r#"{"domain": "real-like", "noise_std": [0.0, 0.01]}"#).unwrap();
        let mut want = RenderConfig::for_domain(Domain::RealLike);
        want.noise_std = [0.0, 0.01];
        assert_eq!(cfg, want);
        let cfg: RenderConfig =
            serde_json::from_str(r#"{"gaze_yaw": {"min_deg": -10, "max_deg": 10}}"#).unwrap();
        assert_eq!(cfg.domain, Domain::Synthetic);
        assert_eq!(cfg.gaze_yaw, AngleDist::uniform(-10.0, 10.0));
        // Round trip.
        let real = RenderConfig::for_domain(Domain::RealLike);
        let back: RenderConfig =
            serde_json::from_str(&serde_json::to_string(&real).unwrap()).unwrap();
        assert_eq!(back, real);
        // Short forms: a number for a range, a number or a pair for an angle distribution.
        let cfg: RenderConfig = serde_json::from_str(
            r#"{"noise_std": 0.05, "blur_sigma_px": 1, "gaze_yaw": [-10, 10], "head_roll": 0}"#,
        )
        .unwrap();
        assert_eq!(cfg.noise_std, [0.05, 0.05]);
        assert_eq!(cfg.blur_sigma_px, [1.0, 1.0]);
        assert_eq!(cfg.gaze_yaw, AngleDist::uniform(-10.0, 10.0));
        assert_eq!(cfg.head_roll, AngleDist::uniform(0.0, 0.0));
        let cfg: RenderConfig =
            serde_json::from_str(r#"{"gaze_pitch": {"min_deg": -9, "max_deg": 9, "std_deg": 3}}"#)
                .unwrap();
        assert_eq!(cfg.gaze_pitch, AngleDist::normal(0.0, 3.0, -9.0, 9.0));
        // Typos and invalid values are rejected.
        assert!(serde_json::from_str::<RenderConfig>(r#"{"noise_std": [0.1, 0.2, 0.3]}"#).is_err());
        assert!(serde_json::from_str::<RenderConfig>(r#"{"noise_std": {"lo": 0.1}}"#).is_err());
        assert!(serde_json::from_str::<RenderConfig>(r#"{"gaze_pitch": {"min": 0}}"#).is_err());
        assert!(serde_json::from_str::<RenderConfig>(r#"{"nois_std": [0, 0]}"#).is_err());
        assert!(serde_json::from_str::<RenderConfig>(r#"{"noise_std": [0.2, 0.1]}"#).is_err());
        assert!(
            serde_json::from_str::<RenderConfig>(
                r#"{"gaze_pitch": {"min_deg": -80, "max_deg": 0}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn bad_configs_do_not_panic() {
        let mut cfg = RenderConfig::for_domain(Domain::RealLike);
        cfg.gaze_pitch = AngleDist::normal(f32::NAN, f32::INFINITY, 90.0, -90.0);
        cfg.gaze_yaw = AngleDist::uniform(80.0, 200.0);
        cfg.eye_half_width_px = [f32::NAN, -3.0];
        cfg.blur_sigma_px = [100.0, 50.0];
        cfg.noise_std = [-1.0, 9.0];
        cfg.gamma_jitter = f32::INFINITY;
        cfg.glint_prob = 2.0;
        cfg.glint_radius_px = [-1.0, 1e9];
        cfg.head_roll = AngleDist::uniform(-1e9, 1e9);
        assert!(cfg.validate().is_err());
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let s = render(&cfg, &mut rng);
            assert!(s.gaze.iter().all(|v| v.is_finite()));
            assert!(
                s.landmarks
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .all(|v| v.is_finite())
            );
        }
    }

    /// Writes sample grids (4× nearest-neighbour upscaled) to `$SIMGAN_RENDER_SAMPLES` (default
    /// `/tmp`): `cargo test --lib eyes::render::tests::probe_write_sample_grids -- --ignored`.
    #[test]
    #[ignore = "a measurement probe, run by hand (see its doc comment)"]
    fn probe_write_sample_grids() {
        let dir = std::env::var("SIMGAN_RENDER_SAMPLES").unwrap_or_else(|_| "/tmp".into());
        let save = |name: &str, imgs: &[GrayImage], cols: u32| {
            let scale = 4;
            let rows = (imgs.len() as u32).div_ceil(cols);
            let (cw, ch) = (EYE_W * scale + 2, EYE_H * scale + 2);
            let mut grid = GrayImage::from_pixel(cols * cw, rows * ch, image::Luma([255]));
            for (i, img) in imgs.iter().enumerate() {
                let (ox, oy) = ((i as u32 % cols) * cw, (i as u32 / cols) * ch);
                for y in 0..EYE_H * scale {
                    for x in 0..EYE_W * scale {
                        grid.put_pixel(ox + x, oy + y, *img.get_pixel(x / scale, y / scale));
                    }
                }
            }
            let path = format!("{dir}/simgan_render_{name}.png");
            grid.save(&path).unwrap();
            println!("wrote {path}");
        };
        for d in [Domain::Synthetic, Domain::RealLike] {
            let cfg = RenderConfig::for_domain(d);
            let imgs: Vec<_> = (0..24).map(|s| sample(&cfg, s).image).collect();
            save(&d.to_string(), &imgs, 4);
        }
        // Same geometry, both domains, side by side.
        let syn = RenderConfig::for_domain(Domain::Synthetic);
        let real = with_labels_of(&RenderConfig::for_domain(Domain::RealLike), &syn);
        let mut pairs = Vec::new();
        for s in 100..112 {
            pairs.push(sample(&syn, s).image);
            pairs.push(sample(&real, s).image);
        }
        save("pairs", &pairs, 4);
        // Gaze sweep: rows pitch 25, 0, -25; columns yaw 35 … -35; with landmarks marked.
        let mut sweep = Vec::new();
        for p in [25.0, 0.0, -25.0] {
            for y in [35.0, 17.5, 0.0, -17.5, -35.0] {
                let s = sample(&fixed_gaze(Domain::Synthetic, p, y), 7);
                let mut img = s.image.clone();
                for pt in s.landmarks.as_deref().unwrap_or(&[]).chunks(2) {
                    let (x, y) = (pt[0].floor(), pt[1].floor());
                    if x >= 0.0 && y >= 0.0 && (x as u32) < EYE_W && (y as u32) < EYE_H {
                        img.put_pixel(x as u32, y as u32, image::Luma([255]));
                    }
                }
                sweep.push(img);
            }
        }
        save("sweep", &sweep, 5);
    }

    /// CPU time of this thread in nanoseconds (Linux), so the timing is per core even when the
    /// machine is busy; `None` elsewhere.
    fn thread_cpu_ns() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse().ok()
    }

    /// Prints µs and images/s per core for render alone and render + PNG encode:
    /// `cargo test --lib eyes::render::tests::probe_render_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement probe, run by hand (see its doc comment)"]
    fn probe_render_speed() {
        use image::ImageEncoder;
        use image::codecs::png::{CompressionType, FilterType, PngEncoder};
        let n = 5000;
        let time = |f: &mut dyn FnMut()| {
            let (c0, t0) = (thread_cpu_ns(), std::time::Instant::now());
            for _ in 0..n {
                f();
            }
            let wall = t0.elapsed().as_secs_f64();
            let cpu = match (c0, thread_cpu_ns()) {
                (Some(a), Some(b)) => (b - a) as f64 * 1e-9,
                _ => wall,
            };
            (cpu / n as f64 * 1e6, wall / n as f64 * 1e6)
        };
        for d in [Domain::Synthetic, Domain::RealLike] {
            let cfg = RenderConfig::for_domain(d);
            let mut rng = StdRng::seed_from_u64(0);
            for _ in 0..200 {
                std::hint::black_box(render(&cfg, &mut rng));
            }
            let r = time(&mut || {
                std::hint::black_box(render(&cfg, &mut rng));
            });
            let mut bytes = 0usize;
            let mut png = |ct: CompressionType| {
                let s = render(&cfg, &mut rng);
                let mut out = Vec::with_capacity(4096);
                PngEncoder::new_with_quality(&mut out, ct, FilterType::Adaptive)
                    .write_image(s.image.as_raw(), EYE_W, EYE_H, image::ExtendedColorType::L8)
                    .unwrap();
                bytes += out.len();
            };
            let p = time(&mut || png(CompressionType::Default));
            let f = time(&mut || png(CompressionType::Fast));
            println!(
                "{d}: render {:.0} µs CPU ({:.0} img/s/core, wall {:.0} µs); render+PNG default {:.0} µs CPU ({:.0} img/s/core); render+PNG fast {:.0} µs CPU ({:.0} img/s/core); {} B/PNG avg",
                r.0,
                1e6 / r.0,
                r.1,
                p.0,
                1e6 / p.0,
                f.0,
                1e6 / f.0,
                bytes / (2 * n),
            );
        }
    }

    /// A cheap probe of the domain gap: ridge regression from 2×2-pooled pixels to (pitch, yaw),
    /// trained on each domain and tested on real-like. Prints mean angular errors:
    /// `cargo test --lib eyes::render::tests::probe_gap_linear -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement probe, run by hand (see its doc comment)"]
    fn probe_gap_linear() {
        const PW: usize = W.div_ceil(2);
        const PH: usize = H.div_ceil(2);
        const F: usize = PW * PH + 1;
        let features = |img: &GrayImage| {
            let mut f = vec![0.0f64; F];
            for (x, y, p) in img.enumerate_pixels() {
                f[(y as usize / 2) * PW + x as usize / 2] += p[0] as f64 / 1020.0;
            }
            f[F - 1] = 1.0;
            f
        };
        let data = |cfg: &RenderConfig, seed: u64, n: usize| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..n)
                .map(|_| {
                    let s = render(cfg, &mut rng);
                    let (p, y) = pitch_yaw(s.gaze);
                    (features(&s.image), [p as f64, y as f64])
                })
                .collect::<Vec<_>>()
        };
        let fit = |train: &[(Vec<f64>, [f64; 2])]| {
            // Normal equations with a ridge, solved by Cholesky.
            let mut a = vec![0.0f64; F * F];
            let mut b = vec![[0.0f64; 2]; F];
            for (f, t) in train {
                for i in 0..F {
                    if f[i] == 0.0 {
                        continue;
                    }
                    for j in 0..F {
                        a[i * F + j] += f[i] * f[j];
                    }
                    b[i][0] += f[i] * t[0];
                    b[i][1] += f[i] * t[1];
                }
            }
            for i in 0..F {
                a[i * F + i] += 1e-3 * train.len() as f64;
            }
            for j in 0..F {
                let mut d = a[j * F + j];
                for k in 0..j {
                    d -= a[j * F + k] * a[j * F + k];
                }
                let d = d.max(1e-12).sqrt();
                a[j * F + j] = d;
                for i in j + 1..F {
                    let mut v = a[i * F + j];
                    for k in 0..j {
                        v -= a[i * F + k] * a[j * F + k];
                    }
                    a[i * F + j] = v / d;
                }
            }
            let mut w = b;
            for i in 0..F {
                let mut v = w[i];
                for k in 0..i {
                    let l = a[i * F + k];
                    v = [v[0] - l * w[k][0], v[1] - l * w[k][1]];
                }
                w[i] = [v[0] / a[i * F + i], v[1] / a[i * F + i]];
            }
            for i in (0..F).rev() {
                let mut v = w[i];
                for k in i + 1..F {
                    let l = a[k * F + i];
                    v = [v[0] - l * w[k][0], v[1] - l * w[k][1]];
                }
                w[i] = [v[0] / a[i * F + i], v[1] / a[i * F + i]];
            }
            w
        };
        let error = |w: &[[f64; 2]], test: &[(Vec<f64>, [f64; 2])]| {
            let mut e = 0.0;
            for (f, t) in test {
                let (mut p, mut y) = (0.0, 0.0);
                for i in 0..F {
                    p += f[i] * w[i][0];
                    y += f[i] * w[i][1];
                }
                let g = from_pitch_yaw(p as f32, y as f32);
                e += crate::domains::eyes::angular_error_deg(
                    g,
                    from_pitch_yaw(t[0] as f32, t[1] as f32),
                ) as f64;
            }
            e / test.len() as f64
        };
        let syn = RenderConfig::for_domain(Domain::Synthetic);
        let real = RenderConfig::for_domain(Domain::RealLike);
        let n = 6000;
        let w_syn = fit(&data(&syn, 1, n));
        let w_real = fit(&data(&real, 2, n));
        // Synthetic appearance with the real-like label distribution: isolates the appearance gap.
        let syn_labels = with_labels_of(&syn, &real);
        let w_syn_l = fit(&data(&syn_labels, 5, n));
        let test_real = data(&real, 3, 2000);
        let test_syn = data(&syn, 4, 2000);
        println!(
            "linear probe, mean angular error: syn→syn {:.2}°, syn→real {:.2}°, \
             syn(real-like labels)→real {:.2}°, real→real {:.2}°",
            error(&w_syn, &test_syn),
            error(&w_syn, &test_real),
            error(&w_syn_l, &test_real),
            error(&w_real, &test_real),
        );
    }
}
