//! The procedural hand: an articulated right hand of spheres and sphere-swept capsules, posed
//! within anatomical limits, seen by the NYU depth camera and rendered straight into the
//! metric crop (a cube of `cube_mm` around the palm), clean (*synthetic*) or through a
//! Kinect-style sensor model (*real-like*).
//!
//! - **Hand** (millimetres, hand frame: origin the palm centre, +Y toward the fingers, +X toward
//!   the thumb, +Z out of the palm): a palm of 4×4 spheres, four fingers of three phalanges each
//!   (flexion at MCP, PIP, DIP toward +Z, abduction at the MCP), a thumb of three segments from
//!   the carpometacarpal joint, and the forearm (a capsule leaving the cube). The hand is scaled
//!   by ±8 %.
//! - **Pose**: a grasp synergy `g ∈ [0, 1]` (0 open, 1 fist) sets every joint's mean flexion,
//!   each joint adds its own jitter; global rotation (roll about the camera axis, pitch, yaw) and
//!   position. The real-like domain draws its synergy and rotations from other distributions
//!   (`PoseParams`): the pose gap of a simulator that does not know how people hold their hands.
//! - **Camera**: NYU's Kinect (fx 588.04, fy 587.08, centre 320, 240). A crop pixel `(i, j)`
//!   (column, row; centres at integers) of an N×N crop looks along the ray through frame pixel
//!   `u = u₀ + (i + ½)·w/N`, where the crop box `[u₀, u₀ + w]` is the cube's projection at the
//!   palm's depth.
//! - **Rendering**: each sphere is splatted into its crop bounding box: at a pixel whose ray
//!   meets the sphere's depth plane at lateral distance ρ < r, the surface is at
//!   `z − √(r² − ρ²)` (z-buffered; capsules are spheres spaced r/4 apart). Depths behind the
//!   cube's back face are background (0), in front of its front face clamped to it.
//! - **Sensor** (real-like, [`SensorParams`]): depth quantised as Kinect disparity (1/8 px steps
//!   at a 75 mm baseline: ≈ 1 mm at 600 mm), axial noise growing with the square of depth plus a
//!   smooth per-frame bias field, missing pixels at grazing angles (surface normal turned away
//!   from the camera) and along silhouette edges, flying pixels between the hand and the
//!   background, and small holes.
//!
//! Row `i` of a seed is [`render`]`(params, seed, i)`: a pure function of its inputs.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// NYU depth camera: focal length along u, px.
pub const FX: f32 = 588.04;
/// Focal length along v, px.
pub const FY: f32 = 587.08;
/// Principal point u.
pub const CX: f32 = 320.0;
/// Principal point v.
pub const CY: f32 = 240.0;

/// The 14 joints, in NYU's evaluation order.
pub const JOINT_NAMES: [&str; 14] = [
    "pinky tip",
    "pinky mid",
    "ring tip",
    "ring mid",
    "middle tip",
    "middle mid",
    "index tip",
    "index mid",
    "thumb tip",
    "thumb mid",
    "thumb root",
    "wrist back",
    "wrist",
    "palm",
];

/// Joints per hand.
pub const JOINTS: usize = 14;

/// Index of the palm joint (the crop centre).
pub const PALM: usize = 13;

/// Which look a frame has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Exact depth, sharp silhouettes.
    Synthetic,
    /// Through the sensor model.
    RealLike,
}

/// How poses are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PoseParams {
    /// The grasp synergy is `u^grasp_power` for uniform u: 1 = uniform, > 1 = mostly open
    /// hands, < 1 = mostly closed.
    pub grasp_power: f32,
    /// Roll about the camera axis: uniform in ±this, degrees.
    pub roll_deg: f32,
    /// Pitch and yaw: uniform in ±this, degrees.
    pub tilt_deg: f32,
    /// Palm distance from the camera, mm: uniform in [near, far].
    pub near_mm: f32,
    /// See `near_mm`.
    pub far_mm: f32,
    /// Per-joint flexion jitter (σ, degrees) around the synergy's flexion.
    pub jitter_deg: f32,
}

/// The sensor model of the real-like look (every knob 0 turns its effect off).
#[derive(Debug, Clone, PartialEq)]
pub struct SensorParams {
    /// Axial noise σ at 1 m, mm (σ grows as depth²).
    pub noise_mm: f32,
    /// Amplitude of the smooth per-frame bias field, mm.
    pub bias_mm: f32,
    /// Quantise depth as Kinect disparity (1/8 px at 75 mm baseline).
    pub quantise: bool,
    /// Probability that a silhouette-edge pixel is missing.
    pub edge_dropout: f32,
    /// Probability that a background pixel next to the hand gets a depth between the hand's
    /// and the cube's back (a flying pixel).
    pub flying: f32,
    /// Normal z-component below which pixels start to go missing (grazing angles).
    pub grazing: f32,
    /// Mean number of small holes per frame.
    pub holes: f32,
}

/// Everything a frame depends on besides seed and index.
#[derive(Debug, Clone, PartialEq)]
pub struct HandParams {
    /// Which look.
    pub look: Look,
    /// Crop side, px (square).
    pub size: u32,
    /// Side of the metric crop cube, mm (NYU practice: 300).
    pub cube_mm: f32,
    /// Pose distribution.
    pub pose: PoseParams,
    /// Sensor model (used by the real-like look only).
    pub sensor: SensorParams,
}

impl HandParams {
    /// The synthetic look: exact depth, uniform synergy, moderate rotations.
    pub fn synthetic(size: u32) -> HandParams {
        HandParams {
            look: Look::Synthetic,
            size,
            cube_mm: 300.0,
            pose: PoseParams {
                grasp_power: 1.0,
                roll_deg: 40.0,
                tilt_deg: 30.0,
                near_mm: 500.0,
                far_mm: 750.0,
                jitter_deg: 8.0,
            },
            sensor: SensorParams {
                noise_mm: 0.0,
                bias_mm: 0.0,
                quantise: false,
                edge_dropout: 0.0,
                flying: 0.0,
                grazing: 0.0,
                holes: 0.0,
            },
        }
    }

    /// The real-like look: the sensor model on, more open hands, wider rolls, less tilt.
    pub fn real_like(size: u32) -> HandParams {
        HandParams {
            look: Look::RealLike,
            size,
            cube_mm: 300.0,
            pose: PoseParams {
                grasp_power: 1.8,
                roll_deg: 55.0,
                tilt_deg: 20.0,
                near_mm: 520.0,
                far_mm: 780.0,
                jitter_deg: 12.0,
            },
            sensor: SensorParams {
                noise_mm: 6.0,
                bias_mm: 3.0,
                quantise: true,
                edge_dropout: 0.45,
                flying: 0.25,
                grazing: 0.35,
                holes: 1.5,
            },
        }
    }
}

/// A rendered frame: depth in mm (0 = background), row-major `size × size`, and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Crop side, px.
    pub size: u32,
    /// Depth, mm, row-major.
    pub depth: Vec<u16>,
    /// Joints in the crop: `(u, v)` crop px (centres at integers), depth mm; row-major 14×3.
    pub joints_uvd: [f32; 3 * JOINTS],
    /// Joints in the camera frame, mm, NYU convention (x right, y up, z forward); 14×3.
    pub joints_xyz: [f32; 3 * JOINTS],
    /// The palm's frame pixel and depth: `(u, v, z)` in the 640×480 frame / mm.
    pub center_uvd: [f32; 3],
    /// The crop box in frame pixels: `(u₀, v₀, u₁, v₁)`.
    pub crop_box: [f32; 4],
}

impl Frame {
    /// The depth crop as the 16-bit grey PNG a `hand_sample` row stores (`what` names it in
    /// errors).
    pub fn png(&self, what: &str) -> crate::error::Result<Vec<u8>> {
        crate::sample::SampleImage {
            width: self.size,
            height: self.size,
            channels: 1,
            pixels: crate::sample::Pixels::U16(self.depth.clone()),
        }
        .encode_png(what)
    }
}

type V3 = [f32; 3];

fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn scale(a: V3, s: f32) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn normalize(a: V3) -> V3 {
    let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt().max(1e-9);
    scale(a, 1.0 / n)
}

/// Row-major 3×3 matrix times a vector.
fn mul(m: &[f32; 9], v: V3) -> V3 {
    [
        m[0] * v[0] + m[1] * v[1] + m[2] * v[2],
        m[3] * v[0] + m[4] * v[1] + m[5] * v[2],
        m[6] * v[0] + m[7] * v[1] + m[8] * v[2],
    ]
}

fn matmul(a: &[f32; 9], b: &[f32; 9]) -> [f32; 9] {
    let mut out = [0f32; 9];
    for r in 0..3 {
        for c in 0..3 {
            out[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
        }
    }
    out
}

fn rot_x(t: f32) -> [f32; 9] {
    let (s, c) = t.sin_cos();
    [1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c]
}

fn rot_y(t: f32) -> [f32; 9] {
    let (s, c) = t.sin_cos();
    [c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c]
}

fn rot_z(t: f32) -> [f32; 9] {
    let (s, c) = t.sin_cos();
    [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]
}

/// A sphere in the camera frame (mm; x right, y down, z forward).
#[derive(Debug, Clone, Copy)]
struct Sphere {
    c: V3,
    r: f32,
}

/// The posed hand: spheres and the 14 joints, hand frame.
struct Hand {
    spheres: Vec<Sphere>,
    joints: [V3; JOINTS],
}

/// Spheres along the capsule `a → b` of radius `r`, spaced ≤ r/4.
fn capsule(out: &mut Vec<Sphere>, a: V3, b: V3, r: f32) {
    let d = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    let n = ((len / (r / 4.0)).ceil() as usize).max(1);
    for k in 0..=n {
        let t = k as f32 / n as f32;
        out.push(Sphere {
            c: add(a, scale(d, t)),
            r,
        });
    }
}

/// One finger: MCP position (x, y), phalanx lengths and radii, abduction offset (degrees).
struct FingerDef {
    base: [f32; 2],
    lengths: [f32; 3],
    radii: [f32; 3],
    spread_deg: f32,
}

/// Pinky, ring, middle, index (the evaluation order of the four fingers).
const FINGERS: [FingerDef; 4] = [
    FingerDef {
        base: [-26.0, 34.0],
        lengths: [32.0, 20.0, 18.0],
        radii: [7.5, 6.8, 6.0],
        spread_deg: -14.0,
    },
    FingerDef {
        base: [-9.0, 41.0],
        lengths: [42.0, 26.0, 21.0],
        radii: [8.3, 7.5, 6.7],
        spread_deg: -5.0,
    },
    FingerDef {
        base: [8.0, 44.0],
        lengths: [45.0, 28.0, 22.0],
        radii: [8.6, 7.8, 7.0],
        spread_deg: 2.0,
    },
    FingerDef {
        base: [25.0, 41.0],
        lengths: [40.0, 25.0, 20.0],
        radii: [8.3, 7.5, 6.7],
        spread_deg: 9.0,
    },
];

/// Pose and place a hand (hand frame, before the global rotation).
fn build_hand(rng: &mut SmallRng, pose: &PoseParams, hand_scale: f32) -> Hand {
    let deg = std::f32::consts::PI / 180.0;
    let g = rng.random::<f32>().powf(pose.grasp_power.max(0.05));
    let sigma = pose.jitter_deg.max(0.0) * deg;
    let jit = |rng: &mut SmallRng| -> f32 { sigma * rng.sample::<f32, _>(StandardNormal) };
    let mut spheres = Vec::with_capacity(256);
    let mut joints = [[0f32; 3]; JOINTS];
    let s = hand_scale;
    // Palm: 4×4 spheres, thickness ≈ 28 mm.
    for row in 0..4 {
        for col in 0..4 {
            let x = -27.0 + 18.0 * col as f32;
            let y = -34.0 + 21.0 * row as f32;
            let r = 14.0 - if row == 3 { 1.5 } else { 0.0 };
            spheres.push(Sphere {
                c: scale([x, y, 0.0], s),
                r: r * s,
            });
        }
    }
    // Wrist and forearm (leaves the crop cube).
    let wrist_th = [24.0, -50.0, 0.0];
    let wrist_pk = [-24.0, -50.0, 0.0];
    capsule(
        &mut spheres,
        scale(wrist_pk, s),
        scale(wrist_th, s),
        16.0 * s,
    );
    capsule(
        &mut spheres,
        scale([0.0, -55.0, 0.0], s),
        scale([0.0, -260.0, -10.0], s),
        27.0 * s,
    );
    joints[11] = scale(wrist_pk, s);
    joints[12] = scale(wrist_th, s);
    joints[PALM] = [0.0, 0.0, 0.0];
    // Fingers: flexion curls toward +Z (the palm side).
    for (k, f) in FINGERS.iter().enumerate() {
        let mcp = (g * 80.0 - 5.0) * deg + jit(rng);
        let pip = (g * 100.0) * deg + jit(rng);
        let dip = 0.65 * pip + 0.5 * jit(rng);
        let flex = [
            mcp.clamp(-15.0 * deg, 90.0 * deg),
            pip.clamp(0.0, 110.0 * deg),
            dip.clamp(0.0, 80.0 * deg),
        ];
        let abd = (f.spread_deg * (1.0 - 0.6 * g)) * deg + 0.6 * jit(rng);
        let e = [-abd.sin(), abd.cos(), 0.0]; // in-plane direction
        let mut p = scale([f.base[0], f.base[1], 0.0], s);
        let mut phi = 0.0;
        let mut points = [p; 4];
        for seg in 0..3 {
            phi += flex[seg];
            let dir = add(scale(e, phi.cos()), scale([0.0, 0.0, 1.0], phi.sin()));
            let q = add(p, scale(dir, f.lengths[seg] * s));
            capsule(&mut spheres, p, q, f.radii[seg] * s);
            p = q;
            points[seg + 1] = q;
        }
        joints[2 * k] = points[3]; // tip
        joints[2 * k + 1] = points[1]; // mid (PIP)
    }
    // Thumb: CMC near the wrist on the thumb side; opposition rotates it across the palm.
    let cmc = scale([26.0, -22.0, 6.0], s);
    let opp = g * 0.9 + 0.1 * rng.random::<f32>();
    let base_dir = normalize([0.75 - 0.55 * opp, 0.62, 0.25 + 0.45 * opp]);
    let bend_axis_dir = normalize([-0.8, 0.1, 0.6]);
    let flex = [
        (10.0 + 25.0 * g) * deg + 0.5 * jit(rng),
        (10.0 + 45.0 * g) * deg + jit(rng),
        (5.0 + 60.0 * g) * deg + jit(rng),
    ];
    let lengths = [38.0, 31.0, 26.0];
    let radii = [11.0, 9.5, 8.3];
    let mut p = cmc;
    let mut phi = 0.0;
    let mut points = [p; 4];
    for seg in 0..3 {
        phi += flex[seg].clamp(0.0, 90.0 * deg);
        let dir = normalize(add(
            scale(base_dir, phi.cos()),
            scale(bend_axis_dir, phi.sin()),
        ));
        let q = add(p, scale(dir, lengths[seg] * s));
        capsule(&mut spheres, p, q, radii[seg] * s);
        p = q;
        points[seg + 1] = q;
    }
    joints[8] = points[3]; // thumb tip
    joints[9] = points[2]; // thumb mid (IP)
    joints[10] = points[1]; // thumb root (MCP)
    Hand { spheres, joints }
}

/// SplitMix64 step.
fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of stream `stream` of frame `index` (pose, sensor) of a seed.
fn stream(seed: u64, index: u64, stream: u64) -> SmallRng {
    SmallRng::seed_from_u64(splitmix64(
        splitmix64(seed ^ 0x4A4E_D5EE_D000) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ stream,
    ))
}

/// Render frame `index` of `seed`.
pub fn render(p: &HandParams, seed: u64, index: u64) -> Frame {
    let deg = std::f32::consts::PI / 180.0;
    let mut rng = stream(seed, index, 1);
    let hand_scale = 1.0 + 0.08 * (2.0 * rng.random::<f32>() - 1.0);
    let hand = build_hand(&mut rng, &p.pose, hand_scale);
    // Hand frame → camera frame: +Y (fingers) up in the image, +Z (palm) toward the camera.
    let base = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0];
    let sym = |rng: &mut SmallRng, a: f32| (2.0 * rng.random::<f32>() - 1.0) * a * deg;
    let roll = sym(&mut rng, p.pose.roll_deg);
    let pitch = sym(&mut rng, p.pose.tilt_deg);
    let yaw = sym(&mut rng, p.pose.tilt_deg);
    let rot = matmul(
        &rot_z(roll),
        &matmul(&rot_x(pitch), &matmul(&rot_y(yaw), &base)),
    );
    let (near, far) = (
        p.pose.near_mm.min(p.pose.far_mm),
        p.pose.far_mm.max(p.pose.near_mm),
    );
    let z = near + (far - near) * rng.random::<f32>();
    let origin = [
        (2.0 * rng.random::<f32>() - 1.0) * 0.25 * z,
        (2.0 * rng.random::<f32>() - 1.0) * 0.18 * z,
        z,
    ];
    let to_cam = |v: V3| add(mul(&rot, v), origin);
    let spheres: Vec<Sphere> = hand
        .spheres
        .iter()
        .map(|s| Sphere {
            c: to_cam(s.c),
            r: s.r,
        })
        .collect();
    let joints: Vec<V3> = hand.joints.iter().map(|&v| to_cam(v)).collect();

    // The crop: the cube around the palm projected at the palm's depth.
    let palm = joints[PALM];
    let (uc, vc) = (FX * palm[0] / palm[2] + CX, FY * palm[1] / palm[2] + CY);
    let half = p.cube_mm / 2.0;
    let (su, sv) = (half * FX / palm[2], half * FY / palm[2]);
    let crop_box = [uc - su, vc - sv, uc + su, vc + sv];
    let n = p.size.max(1) as usize;
    let (pu, pv) = (2.0 * su / n as f32, 2.0 * sv / n as f32); // frame px per crop px
    let frame_u = |i: f32| crop_box[0] + (i + 0.5) * pu;
    let frame_v = |j: f32| crop_box[1] + (j + 0.5) * pv;
    let crop_i = |u: f32| (u - crop_box[0]) / pu - 0.5;
    let crop_j = |v: f32| (v - crop_box[1]) / pv - 0.5;

    // Z-buffer with the surface normal's z-component.
    let mut zbuf = vec![f32::INFINITY; n * n];
    let mut nz = vec![1f32; n * n];
    for s in &spheres {
        if s.c[2] <= s.r + 1.0 {
            continue;
        }
        let (u, v) = (FX * s.c[0] / s.c[2] + CX, FY * s.c[1] / s.c[2] + CY);
        let (ri, rj) = (s.r * FX / s.c[2] / pu, s.r * FY / s.c[2] / pv);
        let (ci, cj) = (crop_i(u), crop_j(v));
        let i0 = (ci - ri).floor().max(0.0) as usize;
        let i1 = ((ci + ri).ceil() as i64).min(n as i64 - 1);
        let j0 = (cj - rj).floor().max(0.0) as usize;
        let j1 = ((cj + rj).ceil() as i64).min(n as i64 - 1);
        if i1 < 0 || j1 < 0 {
            continue;
        }
        let r2 = s.r * s.r;
        for jj in j0..=j1 as usize {
            let y = (frame_v(jj as f32) - CY) * s.c[2] / FY - s.c[1];
            for ii in i0..=i1 as usize {
                let x = (frame_u(ii as f32) - CX) * s.c[2] / FX - s.c[0];
                let rho2 = x * x + y * y;
                if rho2 < r2 {
                    let h = (r2 - rho2).sqrt();
                    let d = s.c[2] - h;
                    let k = jj * n + ii;
                    if d < zbuf[k] {
                        zbuf[k] = d;
                        nz[k] = h / s.r;
                    }
                }
            }
        }
    }
    // Cube clipping: behind the back face is background, in front of the front face clamped.
    let (front, back) = (palm[2] - half, palm[2] + half);
    let mut depth: Vec<f32> = zbuf
        .iter()
        .map(|&d| {
            if d.is_finite() && d <= back {
                d.max(front)
            } else {
                0.0
            }
        })
        .collect();
    if p.look == Look::RealLike {
        sense(
            &mut depth,
            &nz,
            n,
            back,
            &p.sensor,
            &mut stream(seed, index, 2),
        );
    }

    let mut joints_uvd = [0f32; 3 * JOINTS];
    let mut joints_xyz = [0f32; 3 * JOINTS];
    for (k, jv) in joints.iter().enumerate() {
        let (u, v) = (FX * jv[0] / jv[2] + CX, FY * jv[1] / jv[2] + CY);
        joints_uvd[3 * k] = crop_i(u);
        joints_uvd[3 * k + 1] = crop_j(v);
        joints_uvd[3 * k + 2] = jv[2];
        joints_xyz[3 * k] = jv[0];
        joints_xyz[3 * k + 1] = -jv[1];
        joints_xyz[3 * k + 2] = jv[2];
    }
    Frame {
        size: n as u32,
        depth: depth
            .iter()
            .map(|d| d.round().clamp(0.0, 65535.0) as u16)
            .collect(),
        joints_uvd,
        joints_xyz,
        center_uvd: [uc, vc, palm[2]],
        crop_box,
    }
}

/// The real-like sensor model on a clean crop (see the module docs).
fn sense(depth: &mut [f32], nz: &[f32], n: usize, back: f32, s: &SensorParams, rng: &mut SmallRng) {
    let clean = depth.to_vec();
    let fg = |k: usize| clean[k] > 0.0;
    let neighbours = |k: usize| {
        let (i, j) = (k % n, k / n);
        let mut out = [None; 4];
        if i > 0 {
            out[0] = Some(k - 1);
        }
        if i + 1 < n {
            out[1] = Some(k + 1);
        }
        if j > 0 {
            out[2] = Some(k - n);
        }
        if j + 1 < n {
            out[3] = Some(k + n);
        }
        out
    };
    // Smooth bias field: a random plane plus one low-frequency ripple.
    let (a, b, ph) = (
        rng.random::<f32>() * 2.0 - 1.0,
        rng.random::<f32>() * 2.0 - 1.0,
        rng.random::<f32>() * std::f32::consts::TAU,
    );
    for k in 0..depth.len() {
        if fg(k) {
            let nb = neighbours(k);
            let edge = nb.iter().flatten().any(|&q| !fg(q));
            if edge && rng.random::<f32>() < s.edge_dropout {
                depth[k] = 0.0;
                continue;
            }
            if s.grazing > 0.0 && nz[k] < s.grazing {
                let p = 0.85 * (s.grazing - nz[k]) / s.grazing;
                if rng.random::<f32>() < p {
                    depth[k] = 0.0;
                    continue;
                }
            }
            let z = clean[k];
            let (x, y) = ((k % n) as f32 / n as f32, (k / n) as f32 / n as f32);
            let bias = s.bias_mm
                * (0.5 * (a * (x - 0.5) + b * (y - 0.5))
                    + 0.5
                        * (std::f32::consts::TAU * 1.5 * x + ph).sin()
                        * (std::f32::consts::TAU * y).cos());
            let sigma = s.noise_mm * (z / 1000.0).powi(2);
            let mut d = z + bias + sigma * rng.sample::<f32, _>(StandardNormal);
            if s.quantise {
                // Kinect disparity: d = fx · b · 8 / z in 1/8 px steps (b = 75 mm).
                let k8 = FX * 75.0 * 8.0;
                d = k8 / (k8 / d.max(1.0)).round().max(1.0);
            }
            depth[k] = d.clamp(1.0, back);
        } else if s.flying > 0.0 {
            let nb = neighbours(k);
            if let Some(&q) = nb.iter().flatten().find(|&&q| fg(q))
                && rng.random::<f32>() < s.flying
            {
                let t = rng.random::<f32>();
                depth[k] = clean[q] + t * (back - clean[q]);
            }
        }
    }
    // Small holes.
    let holes = if s.holes > 0.0 {
        let whole = s.holes.floor() as usize;
        whole + usize::from(rng.random::<f32>() < s.holes.fract())
    } else {
        0
    };
    for _ in 0..holes {
        let (ci, cj) = (rng.random_range(0..n), rng.random_range(0..n));
        let r = 0.6 + 1.8 * rng.random::<f32>() * n as f32 / 64.0;
        let ri = r.ceil() as usize;
        for j in cj.saturating_sub(ri)..(cj + ri + 1).min(n) {
            for i in ci.saturating_sub(ri)..(ci + ri + 1).min(n) {
                let d2 = (i as f32 - ci as f32).powi(2) + (j as f32 - cj as f32).powi(2);
                if d2 <= r * r {
                    depth[j * n + i] = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_at(f: &Frame, u: f32, v: f32) -> Option<u16> {
        let (i, j) = (u.round(), v.round());
        let n = f.size as f32;
        (i >= 0.0 && j >= 0.0 && i < n && j < n)
            .then(|| f.depth[j as usize * f.size as usize + i as usize])
    }

    #[test]
    fn deterministic_and_index_dependent() {
        let p = HandParams::synthetic(48);
        assert_eq!(render(&p, 3, 7), render(&p, 3, 7));
        assert_ne!(render(&p, 3, 7).depth, render(&p, 3, 8).depth);
        assert_ne!(render(&p, 3, 7).depth, render(&p, 4, 7).depth);
    }

    /// The palm joint is the crop's centre, and the pixel under every visible joint is hand:
    /// its depth is within the joint's depth ± the thickest part there (the palm's sphere radius
    /// plus the hand's tilt).
    #[test]
    fn joints_project_onto_the_rendered_hand() {
        let p = HandParams::synthetic(64);
        let (mut checked, mut on_hand) = (0, 0);
        for i in 0..200 {
            let f = render(&p, 11, i);
            let (u, v) = (f.joints_uvd[3 * PALM], f.joints_uvd[3 * PALM + 1]);
            assert!(
                (u - 31.5).abs() < 1e-3 && (v - 31.5).abs() < 1e-3,
                "palm at {u}, {v}"
            );
            for k in 0..JOINTS {
                let (u, v, d) = (
                    f.joints_uvd[3 * k],
                    f.joints_uvd[3 * k + 1],
                    f.joints_uvd[3 * k + 2],
                );
                if let Some(px) = depth_at(&f, u, v) {
                    checked += 1;
                    // Occluded joints have hand in front of them, never background.
                    if px > 0 && (px as f32) < d + 20.0 {
                        on_hand += 1;
                    }
                }
            }
        }
        assert!(checked > 2000, "{checked}");
        let share = on_hand as f64 / checked as f64;
        assert!(
            share > 0.97,
            "only {on_hand} of {checked} joints fall on hand depth"
        );
    }

    /// Real-like frames differ as designed: holes and missing edges (more zeros inside the
    /// silhouette's neighbourhood), noise (rough surfaces where the synthetic ones are smooth),
    /// and only depths the cube allows.
    #[test]
    fn real_like_frames_are_noisy_and_have_holes() {
        let n = 64;
        let synth = HandParams::synthetic(n);
        let mut real = HandParams::real_like(n);
        real.pose = synth.pose.clone();
        let rough = |f: &Frame| {
            // Median |second difference| along rows on pixels whose row neighbours are hand
            // (the median: occlusion edges are large but few).
            let mut d = Vec::new();
            let w = f.size as usize;
            for j in 0..w {
                for i in 1..w - 1 {
                    let (a, b, cc) = (
                        f.depth[j * w + i - 1],
                        f.depth[j * w + i],
                        f.depth[j * w + i + 1],
                    );
                    if a > 0 && b > 0 && cc > 0 {
                        d.push((a as f64 - 2.0 * b as f64 + cc as f64).abs());
                    }
                }
            }
            d.sort_by(f64::total_cmp);
            d.get(d.len() / 2).copied().unwrap_or(0.0)
        };
        let (mut rs, mut rr, mut fs, mut fr) = (0.0, 0.0, 0usize, 0usize);
        for i in 0..50 {
            let (a, b) = (render(&synth, 5, i), render(&real, 5, i));
            rs += rough(&a);
            rr += rough(&b);
            fs += a.depth.iter().filter(|&&d| d > 0).count();
            fr += b.depth.iter().filter(|&&d| d > 0).count();
            let back = b.center_uvd[2] + 150.0;
            assert!(b.depth.iter().all(|&d| d == 0 || (d as f32) <= back + 0.5));
            assert_eq!(a.joints_uvd, b.joints_uvd, "same pose, same labels");
        }
        assert!(rr > 2.0 * rs, "roughness synthetic {rs} vs real-like {rr}");
        assert!(
            (fr as f64) < 0.97 * fs as f64,
            "foreground synthetic {fs} vs real-like {fr}"
        );
    }

    /// Crops of any size render a hand (frames/s is measured by `simgan bench`, not here).
    #[test]
    fn any_size_renders() {
        for size in [16, 64, 224] {
            let f = render(&HandParams::real_like(size), 1, 2);
            assert_eq!(f.depth.len(), (size * size) as usize);
            assert!(f.depth.iter().any(|&d| d > 0));
        }
    }
}
