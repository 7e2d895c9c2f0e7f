//! Scene specs, their seeded sampler and the held-out split.

use serde::{Deserialize, Serialize};

use crate::camera::{CameraAxes, CameraMotion, CameraPreset, CameraSignature};
use crate::rng::SplitMix64;

/// Object colours: saturated and at least ~90 apart in RGB from each other, and far from
/// every background colour and every blend of two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectColour {
    Red,
    Orange,
    Yellow,
    Green,
    Cyan,
    Blue,
    Purple,
    Pink,
}

impl ObjectColour {
    pub const ALL: [ObjectColour; 8] = [
        ObjectColour::Red,
        ObjectColour::Orange,
        ObjectColour::Yellow,
        ObjectColour::Green,
        ObjectColour::Cyan,
        ObjectColour::Blue,
        ObjectColour::Purple,
        ObjectColour::Pink,
    ];

    pub fn rgb(self) -> [u8; 3] {
        match self {
            ObjectColour::Red => [220, 40, 40],
            ObjectColour::Orange => [245, 140, 30],
            ObjectColour::Yellow => [245, 230, 50],
            ObjectColour::Green => [40, 190, 70],
            ObjectColour::Cyan => [40, 210, 220],
            ObjectColour::Blue => [40, 80, 235],
            ObjectColour::Purple => [140, 60, 220],
            ObjectColour::Pink => [245, 90, 170],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectColour::Red => "red",
            ObjectColour::Orange => "orange",
            ObjectColour::Yellow => "yellow",
            ObjectColour::Green => "green",
            ObjectColour::Cyan => "cyan",
            ObjectColour::Blue => "blue",
            ObjectColour::Purple => "purple",
            ObjectColour::Pink => "pink",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Background colours: neutral or muted, so no background (or gradient between two of
/// them) is mistaken for an object colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundColour {
    Black,
    DarkGray,
    Gray,
    LightGray,
    White,
    Navy,
    Brown,
    Beige,
    Olive,
    Maroon,
}

impl BackgroundColour {
    pub const ALL: [BackgroundColour; 10] = [
        BackgroundColour::Black,
        BackgroundColour::DarkGray,
        BackgroundColour::Gray,
        BackgroundColour::LightGray,
        BackgroundColour::White,
        BackgroundColour::Navy,
        BackgroundColour::Brown,
        BackgroundColour::Beige,
        BackgroundColour::Olive,
        BackgroundColour::Maroon,
    ];

    pub fn rgb(self) -> [u8; 3] {
        match self {
            BackgroundColour::Black => [18, 18, 22],
            BackgroundColour::DarkGray => [64, 64, 68],
            BackgroundColour::Gray => [122, 122, 126],
            BackgroundColour::LightGray => [188, 188, 192],
            BackgroundColour::White => [238, 238, 238],
            BackgroundColour::Navy => [22, 30, 84],
            BackgroundColour::Brown => [96, 64, 42],
            BackgroundColour::Beige => [222, 208, 176],
            BackgroundColour::Olive => [86, 86, 40],
            BackgroundColour::Maroon => [92, 24, 36],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackgroundColour::Black => "black",
            BackgroundColour::DarkGray => "dark gray",
            BackgroundColour::Gray => "gray",
            BackgroundColour::LightGray => "light gray",
            BackgroundColour::White => "white",
            BackgroundColour::Navy => "navy",
            BackgroundColour::Brown => "brown",
            BackgroundColour::Beige => "beige",
            BackgroundColour::Olive => "olive",
            BackgroundColour::Maroon => "maroon",
        }
    }
}

/// Which way a two-colour gradient runs: `from` sits left, top, or top-left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientDirection {
    Horizontal,
    Vertical,
    Diagonal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Background {
    Solid {
        colour: BackgroundColour,
    },
    Gradient {
        from: BackgroundColour,
        to: BackgroundColour,
        direction: GradientDirection,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    /// Radius of the circumscribed circle for an equal-area shape of extent 1 (a circle of
    /// diameter 1); used for margins, culling and overlap checks.
    pub fn circumradius(self) -> f32 {
        match self {
            Shape::Circle => 0.5,
            Shape::Square => SQUARE_SIDE * std::f32::consts::FRAC_1_SQRT_2,
            Shape::Triangle => TRIANGLE_SIDE / 3f32.sqrt(),
        }
    }
}

/// Side of a square with the area of a unit-diameter circle: sqrt(pi)/2.
pub const SQUARE_SIDE: f32 = 0.886_226_9;
/// Side of an equilateral triangle with the area of a unit-diameter circle.
pub const TRIANGLE_SIDE: f32 = 1.346_773_7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    /// Diameter of the equal-area circle, as a fraction of the frame's short side.
    pub fn extent(self) -> f32 {
        match self {
            Size::Small => 0.14,
            Size::Medium => 0.2,
            Size::Large => 0.28,
        }
    }
}

/// Eight screen directions, counter-clockwise from right (y grows downwards in images).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Right,
    UpRight,
    Up,
    UpLeft,
    Left,
    DownLeft,
    Down,
    DownRight,
}

impl Direction {
    pub const ALL: [Direction; 8] = [
        Direction::Right,
        Direction::UpRight,
        Direction::Up,
        Direction::UpLeft,
        Direction::Left,
        Direction::DownLeft,
        Direction::Down,
        Direction::DownRight,
    ];

    /// Unit vector in image coordinates (x right, y down).
    pub fn unit(self) -> [f32; 2] {
        let d = std::f32::consts::FRAC_1_SQRT_2;
        match self {
            Direction::Right => [1.0, 0.0],
            Direction::UpRight => [d, -d],
            Direction::Up => [0.0, -1.0],
            Direction::UpLeft => [-d, -d],
            Direction::Left => [-1.0, 0.0],
            Direction::DownLeft => [-d, d],
            Direction::Down => [0.0, 1.0],
            Direction::DownRight => [d, d],
        }
    }

    /// Nearest of the eight directions to an image-space vector.
    pub fn from_vector(dx: f32, dy: f32) -> Direction {
        let angle = (-dy).atan2(dx);
        let sector = (angle / std::f32::consts::FRAC_PI_4).round() as i32;
        Direction::ALL[sector.rem_euclid(8) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speed {
    Slow,
    Fast,
}

impl Speed {
    /// Frame short sides per second.
    pub fn short_sides_per_second(self) -> f32 {
        match self {
            Speed::Slow => 0.04,
            Speed::Fast => 0.08,
        }
    }
}

/// Growth: the scale changes by e^(0.1 t) and stops at these bounds.
pub const GROWTH_PER_SECOND: f32 = 0.1;
pub const MAX_GROWTH: f32 = 1.8;
pub const MIN_SHRINK: f32 = 0.55;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Motion {
    Still,
    Move { direction: Direction, speed: Speed },
    Grow,
    Shrink,
}

/// Motion without speed: the unit of the held-out split and of direction accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MotionClass {
    Still,
    Move(Direction),
    Grow,
    Shrink,
}

impl Motion {
    pub fn class(self) -> MotionClass {
        match self {
            Motion::Still => MotionClass::Still,
            Motion::Move { direction, .. } => MotionClass::Move(direction),
            Motion::Grow => MotionClass::Grow,
            Motion::Shrink => MotionClass::Shrink,
        }
    }

    /// Scale factor of the object at `seconds`.
    pub fn growth_at(self, seconds: f32) -> f32 {
        match self {
            Motion::Grow => (GROWTH_PER_SECOND * seconds).exp().min(MAX_GROWTH),
            Motion::Shrink => (-GROWTH_PER_SECOND * seconds).exp().max(MIN_SHRINK),
            _ => 1.0,
        }
    }

    fn max_growth(self) -> f32 {
        if self == Motion::Grow {
            MAX_GROWTH
        } else {
            1.0
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub shape: Shape,
    pub colour: ObjectColour,
    pub size: Size,
    pub motion: Motion,
    /// Centre at time 0 in fractions of the frame (x from the left, y from the top).
    pub start: [f32; 2],
}

impl ObjectSpec {
    /// Centre in pixels at `seconds`. Moving objects travel in a straight line and stop
    /// where they would first leave the frame ("stay in view"): they never reverse, so the
    /// direction of travel is the direction asked for.
    pub fn centre_at(&self, seconds: f32, width: u32, height: u32) -> [f32; 2] {
        let (w, h) = (width as f32, height as f32);
        let t = seconds.min(self.stop_time(width, height)).max(0.0);
        let v = self.velocity(width, height);
        [self.start[0] * w + v[0] * t, self.start[1] * h + v[1] * t]
    }

    /// Velocity in pixels per second.
    pub fn velocity(&self, width: u32, height: u32) -> [f32; 2] {
        match self.motion {
            Motion::Move { direction, speed } => {
                let short = width.min(height) as f32;
                let u = direction.unit();
                let s = speed.short_sides_per_second() * short;
                [u[0] * s, u[1] * s]
            }
            _ => [0.0, 0.0],
        }
    }

    /// Circumscribed radius in pixels at scale 1.
    pub fn radius_px(&self, width: u32, height: u32) -> f32 {
        self.shape.circumradius() * self.size.extent() * width.min(height) as f32
    }

    /// Time at which a moving object reaches the frame margin.
    pub fn stop_time(&self, width: u32, height: u32) -> f32 {
        let (w, h) = (width as f32, height as f32);
        let margin = self.radius_px(width, height) * self.motion.max_growth() + 1.0;
        let v = self.velocity(width, height);
        let pos = [self.start[0] * w, self.start[1] * h];
        let mut stop = f32::INFINITY;
        for (axis, extent) in [w, h].into_iter().enumerate() {
            let (lo, hi) = (margin, extent - margin);
            if v[axis] > 1e-6 {
                stop = stop.min(((hi - pos[axis]) / v[axis]).max(0.0));
            } else if v[axis] < -1e-6 {
                stop = stop.min(((lo - pos[axis]) / v[axis]).max(0.0));
            }
        }
        stop
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneSpec {
    pub background: Background,
    pub objects: Vec<ObjectSpec>,
    pub camera: CameraMotion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    HeldOut,
}

/// (colour, shape, motion) triples never produced for training.
pub const HELD_OUT_OBJECTS: [(ObjectColour, Shape, MotionClass); 8] = [
    (
        ObjectColour::Red,
        Shape::Triangle,
        MotionClass::Move(Direction::Up),
    ),
    (ObjectColour::Blue, Shape::Circle, MotionClass::Grow),
    (
        ObjectColour::Green,
        Shape::Square,
        MotionClass::Move(Direction::DownLeft),
    ),
    (ObjectColour::Yellow, Shape::Triangle, MotionClass::Shrink),
    (
        ObjectColour::Purple,
        Shape::Square,
        MotionClass::Move(Direction::Right),
    ),
    (
        ObjectColour::Orange,
        Shape::Circle,
        MotionClass::Move(Direction::UpRight),
    ),
    (ObjectColour::Cyan, Shape::Triangle, MotionClass::Still),
    (
        ObjectColour::Pink,
        Shape::Square,
        MotionClass::Move(Direction::Left),
    ),
];

/// (shape, camera signature) pairs never produced for training; a scene shows the pair
/// when any object has the shape and the camera's image-space motion is exactly this.
pub const HELD_OUT_CAMERA: [(Shape, CameraSignature); 4] = [
    // circle with a pure zoom in
    (
        Shape::Circle,
        CameraSignature {
            horizontal: 0,
            vertical: 0,
            zoom: 1,
            roll: 0,
        },
    ),
    // triangle with a pure counter-clockwise roll
    (
        Shape::Triangle,
        CameraSignature {
            horizontal: 0,
            vertical: 0,
            zoom: 0,
            roll: -1,
        },
    ),
    // square with right_turn_forward (turn right + push in)
    (
        Shape::Square,
        CameraSignature {
            horizontal: 1,
            vertical: 0,
            zoom: 1,
            roll: 0,
        },
    ),
    // triangle with a pure tilt or rise upwards
    (
        Shape::Triangle,
        CameraSignature {
            horizontal: 0,
            vertical: 1,
            zoom: 0,
            roll: 0,
        },
    ),
];

pub fn object_is_held_out(colour: ObjectColour, shape: Shape, motion: MotionClass) -> bool {
    HELD_OUT_OBJECTS.contains(&(colour, shape, motion))
}

pub fn shape_camera_is_held_out(shape: Shape, camera: CameraSignature) -> bool {
    HELD_OUT_CAMERA.contains(&(shape, camera))
}

/// Whether a scene shows any held-out combination (it then never appears in training).
pub fn is_held_out(spec: &SceneSpec) -> bool {
    let sig = spec.camera.signature();
    spec.objects.iter().any(|o| {
        object_is_held_out(o.colour, o.shape, o.motion.class())
            || shape_camera_is_held_out(o.shape, sig)
    })
}

/// Most objects a scene holds.
pub const MAX_OBJECTS: usize = 3;

/// Samples a scene, deterministic in `seed` and `split`. Train scenes never contain a
/// held-out combination; held-out scenes always contain at least one.
pub fn sample_scene(seed: u64, split: Split) -> SceneSpec {
    sample_scene_with(seed, split, MAX_OBJECTS)
}

/// [`sample_scene`] with at most `max_objects` objects (1 to [`MAX_OBJECTS`]; values past
/// it are the same as it), for a training curriculum that starts with fewer objects. The
/// background and the first object are those of [`sample_scene`] for the same seed.
pub fn sample_scene_with(seed: u64, split: Split, max_objects: usize) -> SceneSpec {
    let salt = match split {
        Split::Train => 0x7452_4149_4E00_0000,
        Split::HeldOut => 0x484F_4C44_4F55_5400,
    };
    let mut rng = SplitMix64::new(seed ^ salt);
    let background = sample_background(&mut rng);
    let mut colours = ObjectColour::ALL;
    shuffle(&mut rng, &mut colours);
    let count = match rng.below(100) {
        0..=39 => 1,
        40..=74 => 2,
        _ => 3,
    }
    .min(max_objects.max(1));
    let mut camera = sample_camera(&mut rng);
    let mut kinds: Vec<(ObjectColour, Shape, Size, Motion)> = Vec::with_capacity(count);
    let mut forced_first = false;
    if split == Split::HeldOut {
        if rng.chance(0.5) {
            let (colour, shape, class) = rng.pick(&HELD_OUT_OBJECTS);
            let motion = match class {
                MotionClass::Still => Motion::Still,
                MotionClass::Grow => Motion::Grow,
                MotionClass::Shrink => Motion::Shrink,
                MotionClass::Move(direction) => Motion::Move {
                    direction,
                    speed: rng.pick(&[Speed::Slow, Speed::Fast]),
                },
            };
            kinds.push((colour, shape, rng.pick(&Size::ALL), motion));
        } else {
            let (shape, signature) = rng.pick(&HELD_OUT_CAMERA);
            camera = camera_with_signature(&mut rng, signature);
            let colour = colours[0];
            kinds.push((colour, shape, rng.pick(&Size::ALL), sample_motion(&mut rng)));
        }
        forced_first = true;
    }
    let sig = camera.signature();
    let mut next_colour = 0;
    while kinds.len() < count {
        let colour = loop {
            let c = colours[next_colour % colours.len()];
            next_colour += 1;
            if !kinds.iter().any(|k| k.0 == c) {
                break c;
            }
        };
        // Train scenes redraw shape and motion until the object is not held out.
        let mut tries = 0;
        let (shape, motion) = loop {
            let shape = rng.pick(&Shape::ALL);
            let motion = sample_motion(&mut rng);
            let held = object_is_held_out(colour, shape, motion.class())
                || shape_camera_is_held_out(shape, sig);
            tries += 1;
            if split == Split::HeldOut || !held || tries > 50 {
                break (shape, motion);
            }
        };
        kinds.push((colour, shape, rng.pick(&Size::ALL), motion));
    }
    if split == Split::Train {
        // Every shape is held out with some camera signature; when the redraws above ran
        // out (they cannot for the current table), drop the camera motion instead.
        if kinds.iter().any(|k| {
            object_is_held_out(k.0, k.1, k.3.class()) || shape_camera_is_held_out(k.1, sig)
        }) {
            camera = CameraMotion::Static;
        }
    }
    let objects = place_objects(&mut rng, &kinds, forced_first);
    SceneSpec {
        background,
        objects,
        camera,
    }
}

fn shuffle<T>(rng: &mut SplitMix64, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

fn sample_background(rng: &mut SplitMix64) -> Background {
    let from = rng.pick(&BackgroundColour::ALL);
    if rng.chance(0.5) {
        return Background::Solid { colour: from };
    }
    let to = loop {
        let c = rng.pick(&BackgroundColour::ALL);
        if c != from {
            break c;
        }
    };
    let direction = rng.pick(&[
        GradientDirection::Horizontal,
        GradientDirection::Vertical,
        GradientDirection::Diagonal,
    ]);
    Background::Gradient {
        from,
        to,
        direction,
    }
}

fn sample_motion(rng: &mut SplitMix64) -> Motion {
    match rng.below(100) {
        0..=24 => Motion::Still,
        25..=79 => Motion::Move {
            direction: rng.pick(&Direction::ALL),
            speed: rng.pick(&[Speed::Slow, Speed::Fast]),
        },
        80..=89 => Motion::Grow,
        _ => Motion::Shrink,
    }
}

fn axis_value(rng: &mut SplitMix64) -> i8 {
    let magnitude = 3 + rng.below(8) as i8;
    if rng.chance(0.5) {
        magnitude
    } else {
        -magnitude
    }
}

/// Camera mix: 30% static, 35% one axis, 20% a preset, 15% two axes on different
/// image-space components (so they never cancel).
fn sample_camera(rng: &mut SplitMix64) -> CameraMotion {
    match rng.below(100) {
        0..=29 => CameraMotion::Static,
        30..=64 => {
            let mut a = [0i8; 6];
            a[rng.below(6) as usize] = axis_value(rng);
            CameraMotion::Axes(CameraAxes::from_array(a))
        }
        65..=84 => CameraMotion::Preset(rng.pick(&CameraPreset::ALL)),
        _ => {
            // components: 0 horizontal|pan, 1 vertical|tilt, 2 roll, 3 zoom
            let first = rng.below(4) as usize;
            let second = (first + 1 + rng.below(3) as usize) % 4;
            let mut a = [0i8; 6];
            for component in [first, second] {
                let axis = match component {
                    0 => rng.pick(&[0usize, 2]),
                    1 => rng.pick(&[1usize, 3]),
                    2 => 4,
                    _ => 5,
                };
                a[axis] = axis_value(rng);
            }
            CameraMotion::Axes(CameraAxes::from_array(a))
        }
    }
}

/// A camera motion whose image-space signature is exactly `sig`.
fn camera_with_signature(rng: &mut SplitMix64, sig: CameraSignature) -> CameraMotion {
    if let Some(p) = CameraPreset::ALL
        .iter()
        .find(|p| p.axes().rates().signature() == sig)
    {
        if rng.chance(0.5) {
            return CameraMotion::Preset(*p);
        }
    }
    let magnitude = |rng: &mut SplitMix64| 3 + rng.below(8) as i8;
    let mut a = [0i8; 6];
    if sig.horizontal != 0 {
        a[rng.pick(&[0usize, 2])] = sig.horizontal * magnitude(rng);
    }
    if sig.vertical != 0 {
        a[rng.pick(&[1usize, 3])] = sig.vertical * magnitude(rng);
    }
    a[4] = sig.roll * magnitude(rng);
    a[5] = sig.zoom * magnitude(rng);
    CameraMotion::Axes(CameraAxes::from_array(a))
}

/// Places objects so the 10 s paths fit the frame and never touch each other. Positions
/// are planned for a square frame, the tightest of the three aspects in short-side units.
fn place_objects(
    rng: &mut SplitMix64,
    kinds: &[(ObjectColour, Shape, Size, Motion)],
    keep_first: bool,
) -> Vec<ObjectSpec> {
    const PLAN: u32 = 256;
    let mut placed: Vec<ObjectSpec> = Vec::with_capacity(kinds.len());
    for (index, &(colour, shape, size, motion)) in kinds.iter().enumerate() {
        let mut candidate = ObjectSpec {
            shape,
            colour,
            size,
            motion,
            start: [0.5, 0.5],
        };
        let margin = shape.circumradius() * size.extent() * motion.max_growth() + 0.02;
        let velocity = candidate.velocity(PLAN, PLAN);
        let mut found = false;
        for _ in 0..60 {
            for axis in 0..2 {
                // Start far enough back that the whole 10 s path stays in view when it can.
                let travel = velocity[axis] / PLAN as f32 * 10.0;
                let (lo, hi) = (margin, 1.0 - margin);
                let (lo, hi) = if travel > 0.0 {
                    (lo, (hi - travel).max(lo))
                } else if travel < 0.0 {
                    ((lo - travel).min(hi), hi)
                } else {
                    (lo, hi)
                };
                candidate.start[axis] = rng.range(lo, hi.max(lo));
            }
            if placed
                .iter()
                .all(|other| paths_apart(&candidate, other, PLAN))
            {
                found = true;
                break;
            }
        }
        if found || (index == 0 && keep_first) {
            placed.push(candidate);
        }
    }
    placed
}

/// Checks the two objects stay apart (circumscribed circles plus a gap) over 10 s.
fn paths_apart(a: &ObjectSpec, b: &ObjectSpec, plan: u32) -> bool {
    let gap = 0.04 * plan as f32;
    (0..=40).all(|i| {
        let t = i as f32 * 0.25;
        let (pa, pb) = (a.centre_at(t, plan, plan), b.centre_at(t, plan, plan));
        let ra = a.radius_px(plan, plan) * a.motion.growth_at(t);
        let rb = b.radius_px(plan, plan) * b.motion.growth_at(t);
        let d = ((pa[0] - pb[0]).powi(2) + (pa[1] - pb[1]).powi(2)).sqrt();
        d >= ra + rb + gap
    })
}
