//! Hand pose on depth images, the paper's second experiment: the procedural hand
//! ([`render`], kind `generate-hands` in [`generate`]) and the NYU dataset ([`nyu`], kind
//! `ingest-nyu` in [`ingest`]), both in the `hand_sample` layout
//! (`schemas/hand_sample.json`: a 16-bit depth crop in mm, `joints_uvd`, `joints_xyz`, the crop's
//! centre, box and cube), and the `hand-pose` task ([`task`]) that the stacked hourglass
//! ([`crate::nn::hourglass`]) is trained and scored for.
//!
//! Joint order (NYU's 14 evaluated joints, [`render::JOINT_NAMES`]): pinky tip, pinky mid, ring
//! tip, ring mid, middle tip, middle mid, index tip, index mid, thumb tip, thumb mid, thumb root,
//! wrist back, wrist, palm. In the procedural hand "mid" is the PIP joint of a finger and the IP
//! joint of the thumb, "thumb root" its MCP joint, "wrist" the thumb side of the wrist and
//! "wrist back" the little-finger side (NYU's exact anatomical points are not documented).
//!
//! Coordinates: `joints_uvd` are `u, v` in the stored crop's pixels (pixel centres at integers,
//! u = column, v = row) and depth in mm; `joints_xyz` are mm in the camera frame with NYU's
//! convention (x right, y up, z forward). The networks see depth through the dataset's value
//! range ([`crate::sample::ValueRange`]; `simgan` metadata `pixel_range` 0…`depth_max_mm`,
//! `generate-hands` 1000 mm, `ingest-nyu` 2000 mm by default; with `network_depth = "cube"`
//! also `pixel_window` = half the cube: each crop centred on the median of its hand pixels,
//! ±cube/2 ↦ ±1, background +1). With the window a refined crop's background is exactly 0;
//! with the default absolute range a refiner may leave a few millimetres where the input was 0,
//! so depths below 10 mm count as background.

pub mod generate;
pub mod ingest;
pub mod nyu;
pub mod render;
pub mod task;
