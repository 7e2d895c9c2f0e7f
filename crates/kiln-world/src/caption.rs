//! The caption grammar (paraphrases, varied word order) and its parser.
//!
//! The vocabularies are kept apart on purpose so the parser can be simple and exact on
//! everything the grammar says: object colours never name backgrounds, gradient
//! directions use words no motion phrase uses ("horizontally", "diagonal"), and camera
//! phrases always contain the word "camera" inside a clause of their own.

use serde::{Deserialize, Serialize};

use crate::camera::{CameraAxes, CameraMotion, CameraPreset};
use crate::rng::SplitMix64;
use crate::scene::{
    object_is_held_out, shape_camera_is_held_out, Background, BackgroundColour, Direction,
    GradientDirection, Motion, MotionClass, ObjectColour, SceneSpec, Shape, Size, Speed,
};

/// What a prompt asks an object to do; speed may be left unsaid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MotionIntent {
    Still,
    Move {
        direction: Direction,
        speed: Option<Speed>,
    },
    Grow,
    Shrink,
}

impl MotionIntent {
    pub fn class(self) -> MotionClass {
        match self {
            MotionIntent::Still => MotionClass::Still,
            MotionIntent::Move { direction, .. } => MotionClass::Move(direction),
            MotionIntent::Grow => MotionClass::Grow,
            MotionIntent::Shrink => MotionClass::Shrink,
        }
    }
}

impl From<Motion> for MotionIntent {
    fn from(m: Motion) -> Self {
        match m {
            Motion::Still => MotionIntent::Still,
            Motion::Move { direction, speed } => MotionIntent::Move {
                direction,
                speed: Some(speed),
            },
            Motion::Grow => MotionIntent::Grow,
            Motion::Shrink => MotionIntent::Shrink,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectIntent {
    pub colour: ObjectColour,
    pub shape: Shape,
    pub size: Option<Size>,
    pub motion: Option<MotionIntent>,
}

/// What a prompt asks for. A prompt that says nothing about the camera asks for a static
/// one (the grammar only leaves the camera unsaid when it is static).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptIntent {
    pub background: Option<Background>,
    pub objects: Vec<ObjectIntent>,
    pub camera: CameraMotion,
}

impl PromptIntent {
    /// The full intent of a scene.
    pub fn from_spec(spec: &SceneSpec) -> Self {
        PromptIntent {
            background: Some(spec.background),
            objects: spec
                .objects
                .iter()
                .map(|o| ObjectIntent {
                    colour: o.colour,
                    shape: o.shape,
                    size: Some(o.size),
                    motion: Some(o.motion.into()),
                })
                .collect(),
            camera: spec.camera,
        }
    }

    /// Whether this (parsed, possibly partial) intent agrees with a full one: everything
    /// said matches, objects by colour, camera axes by sign and strength bucket.
    pub fn agrees_with(&self, truth: &PromptIntent) -> bool {
        if self.background.is_some() && self.background != truth.background {
            return false;
        }
        if self.objects.len() != truth.objects.len() {
            return false;
        }
        let objects_ok = self.objects.iter().all(|o| {
            truth.objects.iter().any(|t| {
                t.colour == o.colour
                    && t.shape == o.shape
                    && (o.size.is_none() || o.size == t.size)
                    && match (o.motion, t.motion) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (
                            Some(MotionIntent::Move {
                                direction: d1,
                                speed: s1,
                            }),
                            Some(MotionIntent::Move {
                                direction: d2,
                                speed: s2,
                            }),
                        ) => d1 == d2 && (s1.is_none() || s1 == s2),
                        (Some(a), Some(b)) => a == b,
                    }
            })
        });
        objects_ok && camera_agrees(self.camera, truth.camera)
    }

    /// Whether the prompt asks for a combination of the held-out split.
    pub fn is_held_out(&self) -> bool {
        let sig = self.camera.signature();
        self.objects.iter().any(|o| {
            o.motion
                .is_some_and(|m| object_is_held_out(o.colour, o.shape, m.class()))
                || shape_camera_is_held_out(o.shape, sig)
        })
    }
}

/// Strength buckets the captions can express: slight (1-3), plain (4-7), strong (8-10).
fn bucket(v: i8) -> i8 {
    let b = match v.unsigned_abs() {
        0 => 0,
        1..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    b * v.signum()
}

fn camera_agrees(a: CameraMotion, b: CameraMotion) -> bool {
    match (a, b) {
        (CameraMotion::Axes(x), CameraMotion::Axes(y)) => {
            x.to_array().map(bucket) == y.to_array().map(bucket)
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------- generation

fn article(next_word: &str) -> &'static str {
    match next_word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn with_article(phrase: &str) -> String {
    format!("{} {}", article(phrase), phrase)
}

fn object_noun_phrase(
    rng: &mut SplitMix64,
    colour: ObjectColour,
    shape: Shape,
    size: Size,
) -> String {
    let size_word = match size {
        Size::Small => rng.pick(&["small", "tiny"]),
        Size::Medium => rng.pick(&["", "", "medium", "medium-sized"]),
        Size::Large => rng.pick(&["large", "big"]),
    };
    let colour_word = match colour {
        ObjectColour::Purple => rng.pick(&["purple", "violet"]),
        c => c.name(),
    };
    let shape_word = match shape {
        Shape::Circle => rng.pick(&["circle", "circle", "disc", "ball"]),
        s => s.name(),
    };
    let words: Vec<&str> = [size_word, colour_word, shape_word]
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect();
    with_article(&words.join(" "))
}

fn direction_phrase(rng: &mut SplitMix64, d: Direction) -> &'static str {
    match d {
        Direction::Right => rng.pick(&["to the right", "right", "rightward"]),
        Direction::Left => rng.pick(&["to the left", "left", "leftward"]),
        Direction::Up => rng.pick(&["up", "upward", "toward the top"]),
        Direction::Down => rng.pick(&["down", "downward", "toward the bottom"]),
        Direction::UpRight => rng.pick(&[
            "up and to the right",
            "toward the upper right",
            "toward the top right",
        ]),
        Direction::UpLeft => rng.pick(&[
            "up and to the left",
            "toward the upper left",
            "toward the top left",
        ]),
        Direction::DownRight => rng.pick(&[
            "down and to the right",
            "toward the lower right",
            "toward the bottom right",
        ]),
        Direction::DownLeft => rng.pick(&[
            "down and to the left",
            "toward the lower left",
            "toward the bottom left",
        ]),
    }
}

/// A verb phrase for an object's motion; `participle` gives "-ing" forms.
fn motion_phrase(rng: &mut SplitMix64, motion: Motion, participle: bool) -> String {
    match motion {
        Motion::Still => {
            let finite = [
                "stays still",
                "sits still",
                "remains motionless",
                "does not move",
                "stays put",
                "rests in place",
            ];
            let ing = ["staying still", "sitting still", "resting motionless"];
            rng.pick(if participle { &ing[..] } else { &finite[..] })
                .to_string()
        }
        Motion::Grow => {
            let finite = ["grows", "grows larger", "gets bigger", "expands", "swells"];
            let ing = ["growing", "expanding", "getting bigger"];
            rng.pick(if participle { &ing[..] } else { &finite[..] })
                .to_string()
        }
        Motion::Shrink => {
            let finite = ["shrinks", "gets smaller", "contracts", "shrinks away"];
            let ing = ["shrinking", "contracting", "getting smaller"];
            rng.pick(if participle { &ing[..] } else { &finite[..] })
                .to_string()
        }
        Motion::Move { direction, speed } => {
            // Up and down sometimes get verbs of their own ("rises", "sinks").
            let own_verb: Option<&str> = match (direction, participle) {
                (Direction::Up, false) if rng.chance(0.4) => Some(rng.pick(&["rises", "climbs"])),
                (Direction::Up, true) if rng.chance(0.4) => Some(rng.pick(&["rising", "climbing"])),
                (Direction::Down, false) if rng.chance(0.4) => {
                    Some(rng.pick(&["falls", "sinks", "descends"]))
                }
                (Direction::Down, true) if rng.chance(0.4) => {
                    Some(rng.pick(&["falling", "sinking", "descending"]))
                }
                _ => None,
            };
            let core = match own_verb {
                Some(v) => v.to_string(),
                None => {
                    let verb = if participle {
                        rng.pick(&["moving", "drifting", "sliding", "travelling", "gliding"])
                    } else {
                        rng.pick(&["moves", "drifts", "slides", "travels", "glides"])
                    };
                    format!("{verb} {}", direction_phrase(rng, direction))
                }
            };
            let placement = rng.below(4);
            let adverb = match speed {
                Speed::Slow => rng.pick(&["slowly", "gently", "lazily"]),
                Speed::Fast if placement == 1 => rng.pick(&["quickly", "rapidly", "swiftly"]),
                Speed::Fast => rng.pick(&["quickly", "rapidly", "swiftly", "fast"]),
            };
            match placement {
                0 => core,
                1 => format!("{adverb} {core}"),
                _ => format!("{core} {adverb}"),
            }
        }
    }
}

fn background_phrase(rng: &mut SplitMix64, bg: &Background) -> String {
    match bg {
        Background::Solid { colour } => {
            let c = colour.name();
            match rng.below(4) {
                0 => format!("on {} background", with_article(c)),
                1 => format!("against {} backdrop", with_article(c)),
                2 => format!("on a plain {c} background"),
                _ => format!("over {} background", with_article(c)),
            }
        }
        Background::Gradient {
            from,
            to,
            direction,
        } => {
            let (a, b) = (from.name(), to.name());
            let (adj, adv) = gradient_words(*direction);
            match rng.below(3) {
                0 => format!("on a background fading from {a} to {b} {adv}"),
                1 => format!("against {} gradient from {a} to {b}", with_article(adj)),
                _ => format!("on {}-to-{b} gradient running {adv}", with_article(a)),
            }
        }
    }
}

fn gradient_words(d: GradientDirection) -> (&'static str, &'static str) {
    match d {
        GradientDirection::Horizontal => ("horizontal", "horizontally"),
        GradientDirection::Vertical => ("vertical", "vertically"),
        GradientDirection::Diagonal => ("diagonal", "diagonally"),
    }
}

fn background_sentence(rng: &mut SplitMix64, bg: &Background) -> String {
    let noun = rng.pick(&["background", "backdrop"]);
    match bg {
        Background::Solid { colour } => format!("The {noun} is {}.", colour.name()),
        Background::Gradient {
            from,
            to,
            direction,
        } => {
            let (adj, _) = gradient_words(*direction);
            format!(
                "The {noun} is {} gradient from {} to {}.",
                with_article(adj),
                from.name(),
                to.name()
            )
        }
    }
}

/// What the camera does, as a finite verb phrase after "the camera".
fn camera_phrase(rng: &mut SplitMix64, camera: CameraMotion) -> String {
    match camera {
        CameraMotion::Static => rng
            .pick(&["stays still", "does not move", "is static", "is locked off"])
            .to_string(),
        CameraMotion::Preset(p) => match p {
            CameraPreset::DownBack => rng.pick(&[
                "moves down and back",
                "pulls back and down",
                "descends and pulls back",
            ]),
            CameraPreset::ForwardUp => rng.pick(&[
                "moves forward and up",
                "pushes forward and rises",
                "rises and pushes forward",
            ]),
            CameraPreset::RightTurnForward => rng.pick(&[
                "turns right and moves forward",
                "moves forward and turns right",
                "turns right and pushes forward",
            ]),
            CameraPreset::LeftTurnForward => rng.pick(&[
                "turns left and moves forward",
                "moves forward and turns left",
                "turns left and pushes forward",
            ]),
        }
        .to_string(),
        CameraMotion::Axes(axes) => {
            let mut parts = Vec::new();
            for (axis, v) in axes.to_array().into_iter().enumerate() {
                if v == 0 {
                    continue;
                }
                let positive = v > 0;
                let verb = match (axis, positive) {
                    (0, true) => rng.pick(&["trucks right", "slides right", "tracks right"]),
                    (0, false) => rng.pick(&["trucks left", "slides left", "tracks left"]),
                    (1, true) => rng.pick(&["rises", "cranes up", "moves up"]),
                    (1, false) => rng.pick(&["descends", "cranes down", "moves down"]),
                    (2, true) => "pans right",
                    (2, false) => "pans left",
                    (3, true) => "tilts up",
                    (3, false) => "tilts down",
                    (4, true) => "rolls clockwise",
                    (4, false) => rng.pick(&[
                        "rolls counterclockwise",
                        "rolls counter-clockwise",
                        "rolls anticlockwise",
                    ]),
                    (_, true) => rng.pick(&["zooms in", "pushes in"]),
                    (_, false) => rng.pick(&["zooms out", "pulls out"]),
                };
                let strength = match v.unsigned_abs() {
                    1..=3 => rng.pick(&[" slightly", " gently", " a little"]),
                    8.. => rng.pick(&[" strongly", " quickly", " a lot"]),
                    _ => "",
                };
                parts.push(format!("{verb}{strength}"));
            }
            if parts.len() > 1 && rng.chance(0.5) {
                parts.reverse();
            }
            parts.join(" and ")
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn join_clauses(rng: &mut SplitMix64, clauses: &[String]) -> String {
    match clauses {
        [one] => one.clone(),
        [a, b] => match rng.below(3) {
            0 => format!("{a} and {b}"),
            1 => format!("{a}, while {b}"),
            _ => format!("{a}; {b}"),
        },
        _ => {
            let (last, rest) = clauses.split_last().expect("three or more clauses");
            match rng.below(3) {
                0 => format!("{} and {last}", rest.join(", ")),
                1 => format!("{}, and {last}", rest.join(", ")),
                _ => clauses.join("; "),
            }
        }
    }
}

/// One caption for a scene; `rng` picks the paraphrase and word order.
pub fn caption(spec: &SceneSpec, rng: &mut SplitMix64) -> String {
    let moving_camera = spec.camera != CameraMotion::Static;
    let mention_camera = moving_camera || rng.chance(0.25);
    let template = if mention_camera {
        rng.below(5)
    } else {
        [0, 1, 3, 4][rng.below(4) as usize]
    };
    let participle = template == 3;
    let clauses: Vec<String> = spec
        .objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                object_noun_phrase(rng, o.colour, o.shape, o.size),
                motion_phrase(rng, o.motion, participle)
            )
        })
        .collect();
    let objects = if participle {
        match clauses.as_slice() {
            [one] => one.clone(),
            _ => {
                let (last, rest) = clauses.split_last().expect("two or more clauses");
                format!("{} and {last}", rest.join(", "))
            }
        }
    } else {
        join_clauses(rng, &clauses)
    };
    let background = background_phrase(rng, &spec.background);
    let camera = camera_phrase(rng, spec.camera);
    let camera_suffix = if !mention_camera {
        String::new()
    } else {
        match rng.below(3) {
            0 => format!(" while the camera {camera}"),
            1 => format!(" as the camera {camera}"),
            _ => format!(". The camera {camera}"),
        }
    };
    let text = match template {
        0 => format!("{}, {objects}{camera_suffix}.", capitalise(&background)),
        1 | 3 => format!("{} {background}{camera_suffix}.", capitalise(&objects)),
        2 => {
            let lead = rng.pick(&["The camera", "Camera"]);
            format!("{lead} {camera}: {objects} {background}.")
        }
        _ => {
            let camera_sentence = if mention_camera {
                format!(" The camera {camera}.")
            } else {
                String::new()
            };
            format!(
                "{}. {}{camera_sentence}",
                capitalise(&objects),
                background_sentence(rng, &spec.background)
            )
        }
    };
    text
}

/// `count` captions for one scene from a seed (paraphrases may repeat for simple scenes).
pub fn captions(spec: &SceneSpec, seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(|_| caption(spec, &mut rng)).collect()
}

// ---------------------------------------------------------------- parsing

fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for ch in text.chars().flat_map(char::to_lowercase) {
        if ch.is_alphanumeric() || ch == '\'' {
            word.push(ch);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if matches!(ch, '.' | ',' | ';' | ':' | '!' | '?') {
            tokens.push("|".to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// Splits at punctuation and at "while"/"as", which only ever join clauses.
fn segments(tokens: &[String]) -> Vec<Vec<&str>> {
    let mut out = vec![Vec::new()];
    for t in tokens {
        if matches!(t.as_str(), "|" | "while" | "as" | "whilst") {
            out.push(Vec::new());
        } else if let Some(last) = out.last_mut() {
            last.push(t.as_str());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn object_colour_word(w: &str) -> Option<ObjectColour> {
    Some(match w {
        "red" => ObjectColour::Red,
        "orange" => ObjectColour::Orange,
        "yellow" => ObjectColour::Yellow,
        "green" => ObjectColour::Green,
        "cyan" | "turquoise" => ObjectColour::Cyan,
        "blue" => ObjectColour::Blue,
        "purple" | "violet" => ObjectColour::Purple,
        "pink" | "magenta" => ObjectColour::Pink,
        _ => return None,
    })
}

fn shape_word(w: &str) -> Option<Shape> {
    Some(match w {
        "circle" | "circles" | "disc" | "disk" | "ball" | "dot" => Shape::Circle,
        "square" | "squares" | "box" => Shape::Square,
        "triangle" | "triangles" => Shape::Triangle,
        _ => return None,
    })
}

fn size_word(w: &str) -> Option<Size> {
    Some(match w {
        "small" | "tiny" | "little" => Size::Small,
        "medium" => Size::Medium,
        "large" | "big" | "huge" => Size::Large,
        _ => return None,
    })
}

/// Background colours in order of mention, reading "dark gray" and "light gray" as one.
fn background_colours(words: &[&str]) -> Vec<BackgroundColour> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let next_is_gray = words
            .get(i + 1)
            .is_some_and(|n| matches!(*n, "gray" | "grey"));
        let (colour, used) = match words[i] {
            "dark" if next_is_gray => (Some(BackgroundColour::DarkGray), 2),
            "light" if next_is_gray => (Some(BackgroundColour::LightGray), 2),
            "black" => (Some(BackgroundColour::Black), 1),
            "gray" | "grey" => (Some(BackgroundColour::Gray), 1),
            "white" => (Some(BackgroundColour::White), 1),
            "navy" => (Some(BackgroundColour::Navy), 1),
            "brown" => (Some(BackgroundColour::Brown), 1),
            "beige" => (Some(BackgroundColour::Beige), 1),
            "olive" => (Some(BackgroundColour::Olive), 1),
            "maroon" => (Some(BackgroundColour::Maroon), 1),
            _ => (None, 1),
        };
        if let Some(c) = colour {
            out.push(c);
        }
        i += used;
    }
    out
}

fn parse_motion(words: &[&str]) -> Option<MotionIntent> {
    let has = |set: &[&str]| words.iter().any(|w| set.contains(w));
    if has(&[
        "grows",
        "grow",
        "growing",
        "expands",
        "expanding",
        "swells",
        "swelling",
        "bigger",
        "larger",
    ]) {
        return Some(MotionIntent::Grow);
    }
    if has(&[
        "shrinks",
        "shrink",
        "shrinking",
        "contracts",
        "contracting",
        "smaller",
    ]) {
        return Some(MotionIntent::Shrink);
    }
    let mut dx = 0i32;
    let mut dy = 0i32;
    for w in words {
        match *w {
            "right" | "rightward" | "rightwards" => dx = 1,
            "left" | "leftward" | "leftwards" => dx = -1,
            "up" | "upward" | "upwards" | "top" | "upper" | "rises" | "rising" | "rise"
            | "climbs" | "climbing" | "climb" => dy = -1,
            "down" | "downward" | "downwards" | "bottom" | "lower" | "falls" | "falling"
            | "fall" | "sinks" | "sinking" | "sink" | "descends" | "descending" => dy = 1,
            _ => {}
        }
    }
    if dx != 0 || dy != 0 {
        let speed = if has(&["slowly", "gently", "lazily", "slow"]) {
            Some(Speed::Slow)
        } else if has(&["quickly", "rapidly", "swiftly", "fast", "quick"]) {
            Some(Speed::Fast)
        } else {
            None
        };
        let direction = Direction::from_vector(dx as f32, dy as f32);
        return Some(MotionIntent::Move { direction, speed });
    }
    if has(&[
        "still",
        "motionless",
        "stationary",
        "put",
        "not",
        "rests",
        "resting",
        "static",
    ]) {
        return Some(MotionIntent::Still);
    }
    None
}

fn parse_camera(words: &[&str]) -> CameraMotion {
    let has = |w: &str| words.contains(&w);
    if has("back") && (has("down") || has("descends")) {
        return CameraMotion::Preset(CameraPreset::DownBack);
    }
    if has("turns") && has("forward") {
        if has("right") {
            return CameraMotion::Preset(CameraPreset::RightTurnForward);
        }
        if has("left") {
            return CameraMotion::Preset(CameraPreset::LeftTurnForward);
        }
    }
    if has("forward") && (has("up") || has("rises")) {
        return CameraMotion::Preset(CameraPreset::ForwardUp);
    }
    let mut axes = [0i8; 6];
    for part in words.split(|w| *w == "and") {
        let has = |set: &[&str]| part.iter().any(|w| set.contains(w));
        let sign_lr = if has(&["right"]) {
            1
        } else if has(&["left"]) {
            -1
        } else {
            0
        };
        let sign_ud = if has(&["up"]) {
            1
        } else if has(&["down"]) {
            -1
        } else {
            0
        };
        let (axis, sign) = if has(&["pans", "pan", "panning"]) {
            (2, sign_lr)
        } else if has(&["tilts", "tilt", "tilting"]) {
            (3, sign_ud)
        } else if has(&["rolls", "roll", "rolling"]) {
            let ccw = has(&["counterclockwise", "counter", "anticlockwise", "anti"]);
            (
                4,
                if ccw {
                    -1
                } else if has(&["clockwise"]) {
                    1
                } else {
                    0
                },
            )
        } else if has(&[
            "zooms", "zoom", "zooming", "pushes", "pulls", "dolly", "dollies",
        ]) {
            (
                5,
                if has(&["in"]) {
                    1
                } else if has(&["out"]) {
                    -1
                } else {
                    0
                },
            )
        } else if has(&["rises", "rising"]) {
            (1, 1)
        } else if has(&["descends", "descending"]) {
            (1, -1)
        } else if sign_ud != 0 {
            (1, sign_ud)
        } else if sign_lr != 0 {
            (0, sign_lr)
        } else {
            continue;
        };
        let strength = if has(&["slightly", "gently", "little", "slowly"]) {
            3
        } else if has(&["strongly", "quickly", "lot", "fast", "rapidly"]) {
            9
        } else {
            6
        };
        axes[axis] = sign * strength;
    }
    let axes = CameraAxes::from_array(axes);
    if axes.is_zero() {
        CameraMotion::Static
    } else {
        CameraMotion::Axes(axes)
    }
}

/// Recovers the intent of a prompt: objects (colour + shape, with size and motion when
/// said), background when said, and the camera (static when unsaid). Returns `None` when
/// no object with a known colour and shape is mentioned.
pub fn parse_prompt(text: &str) -> Option<PromptIntent> {
    let tokens = tokenize(text);
    let segs = segments(&tokens);
    let mut camera = CameraMotion::Static;
    let mut camera_seen = false;
    let mut scene_words: Vec<&str> = Vec::new();
    let mut objects = Vec::new();
    for seg in &segs {
        if seg.contains(&"camera") {
            if !camera_seen {
                camera = parse_camera(seg);
                camera_seen = true;
            }
            continue;
        }
        scene_words.extend(seg.iter().copied());
        // Noun phrases: a shape word with a colour among the up to three words before it.
        let mut phrases: Vec<(usize, usize, ObjectIntent)> = Vec::new(); // (start, shape index, ..)
        for (i, w) in seg.iter().enumerate() {
            let Some(shape) = shape_word(w) else { continue };
            let mut colour = None;
            let mut size = None;
            let mut start = i;
            for j in (i.saturating_sub(3)..i).rev() {
                if let Some(c) = object_colour_word(seg[j]) {
                    colour.get_or_insert(c);
                    start = j;
                } else if let Some(s) = size_word(seg[j]) {
                    size.get_or_insert(s);
                    start = j;
                } else if matches!(seg[j], "sized") {
                    start = j;
                } else {
                    break;
                }
            }
            if let Some(colour) = colour {
                phrases.push((
                    start,
                    i,
                    ObjectIntent {
                        colour,
                        shape,
                        size,
                        motion: None,
                    },
                ));
            }
        }
        for k in 0..phrases.len() {
            let end = phrases.get(k + 1).map_or(seg.len(), |p| p.0);
            let from = (phrases[k].1 + 1).min(end);
            let mut intent = phrases[k].2;
            intent.motion = parse_motion(&seg[from..end]);
            objects.push(intent);
        }
    }
    if objects.is_empty() {
        return None;
    }
    let colours = background_colours(&scene_words);
    let background = match colours.as_slice() {
        [] => None,
        [one] => Some(Background::Solid { colour: *one }),
        [from, to, ..] => {
            let has = |set: &[&str]| scene_words.iter().any(|w| set.contains(w));
            let direction = if has(&["vertical", "vertically"]) {
                GradientDirection::Vertical
            } else if has(&["diagonal", "diagonally"]) {
                GradientDirection::Diagonal
            } else {
                GradientDirection::Horizontal
            };
            Some(Background::Gradient {
                from: *from,
                to: *to,
                direction,
            })
        }
    };
    Some(PromptIntent {
        background,
        objects,
        camera,
    })
}
