//! Weight layouts of the Wan transformer. The model asks for diffusers names; the original
//! Wan release (and ComfyUI's repackaging of it, prefixed `model.diffusion_model.`) stores
//! the same tensors, with the same shapes, under other names. The renames are those of
//! diffusers' `convert_wan_transformer_to_diffusers` / `convert_wan_to_diffusers.py`, read
//! backwards. Note the original calls the cross-attention norm `norm3` and the FFN norm
//! `norm2`; diffusers swaps them.

use crate::KeyMap;

/// A key stored only by the original layout: the output head's modulation table.
const ORIGINAL_MARKER: &str = "head.modulation";

/// Top-level renames, diffusers prefix -> original prefix.
const TOP_LEVEL: &[(&str, &str)] = &[
    (
        "condition_embedder.time_embedder.linear_1.",
        "time_embedding.0.",
    ),
    (
        "condition_embedder.time_embedder.linear_2.",
        "time_embedding.2.",
    ),
    (
        "condition_embedder.text_embedder.linear_1.",
        "text_embedding.0.",
    ),
    (
        "condition_embedder.text_embedder.linear_2.",
        "text_embedding.2.",
    ),
    ("condition_embedder.time_proj.", "time_projection.1."),
    (
        "condition_embedder.image_embedder.norm1.",
        "img_emb.proj.0.",
    ),
    (
        "condition_embedder.image_embedder.ff.net.0.proj.",
        "img_emb.proj.1.",
    ),
    (
        "condition_embedder.image_embedder.ff.net.2.",
        "img_emb.proj.3.",
    ),
    (
        "condition_embedder.image_embedder.norm2.",
        "img_emb.proj.4.",
    ),
    (
        "condition_embedder.image_embedder.pos_embed",
        "img_emb.emb_pos",
    ),
    ("scale_shift_table", "head.modulation"),
    ("proj_out.", "head.head."),
];

/// Renames inside `blocks.N.`, diffusers prefix -> original prefix.
const IN_BLOCK: &[(&str, &str)] = &[
    ("attn1.to_q.", "self_attn.q."),
    ("attn1.to_k.", "self_attn.k."),
    ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."),
    ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."),
    ("attn2.to_k.", "cross_attn.k."),
    ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."),
    ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."),
    ("attn2.add_k_proj.", "cross_attn.k_img."),
    ("attn2.add_v_proj.", "cross_attn.v_img."),
    ("attn2.norm_added_k.", "cross_attn.norm_k_img."),
    ("norm2.", "norm3."),
    ("norm3.", "norm2."),
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
    ("scale_shift_table", "modulation"),
];

/// The key map for a transformer checkpoint with these stored keys: `None` when the file is
/// already in the diffusers layout, else a map from each diffusers key to the stored key of
/// the original Wan layout (with whatever prefix the file uses, e.g. ComfyUI's
/// `model.diffusion_model.`). No tensor needs reshaping: the shapes agree between layouts.
pub fn key_map_for(stored_keys: &[String]) -> Option<KeyMap> {
    let prefix = stored_keys
        .iter()
        .filter_map(|k| k.strip_suffix(ORIGINAL_MARKER))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .min_by_key(|p| p.len())?
        .to_string();
    Some(Box::new(move |key: &str| {
        format!("{prefix}{}", original_key(key))
    }))
}

/// The original-layout name of a diffusers transformer key (without any file prefix).
/// Keys with no rename (e.g. `patch_embedding.weight`) come back unchanged.
pub fn original_key(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("blocks.") {
        if let Some((index, name)) = rest.split_once('.') {
            return format!("blocks.{index}.{}", rename(name, IN_BLOCK));
        }
    }
    rename(key, TOP_LEVEL)
}

fn rename(name: &str, table: &[(&str, &str)]) -> String {
    table
        .iter()
        .find_map(|(from, to)| name.strip_prefix(from).map(|tail| format!("{to}{tail}")))
        .unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn diffusers_layout_needs_no_map() {
        let stored = keys(&[
            "scale_shift_table",
            "proj_out.weight",
            "blocks.0.attn1.to_q.weight",
        ]);
        assert!(key_map_for(&stored).is_none());
    }

    #[test]
    fn maps_every_kind_of_key() {
        let cases = [
            ("patch_embedding.weight", "patch_embedding.weight"),
            (
                "condition_embedder.time_embedder.linear_1.bias",
                "time_embedding.0.bias",
            ),
            (
                "condition_embedder.time_embedder.linear_2.weight",
                "time_embedding.2.weight",
            ),
            (
                "condition_embedder.text_embedder.linear_1.weight",
                "text_embedding.0.weight",
            ),
            (
                "condition_embedder.text_embedder.linear_2.bias",
                "text_embedding.2.bias",
            ),
            (
                "condition_embedder.time_proj.weight",
                "time_projection.1.weight",
            ),
            ("scale_shift_table", "head.modulation"),
            ("proj_out.weight", "head.head.weight"),
            (
                "blocks.12.attn1.to_q.weight",
                "blocks.12.self_attn.q.weight",
            ),
            ("blocks.0.attn1.to_out.0.bias", "blocks.0.self_attn.o.bias"),
            (
                "blocks.3.attn1.norm_k.weight",
                "blocks.3.self_attn.norm_k.weight",
            ),
            ("blocks.3.attn2.to_v.weight", "blocks.3.cross_attn.v.weight"),
            (
                "blocks.3.attn2.norm_q.weight",
                "blocks.3.cross_attn.norm_q.weight",
            ),
            ("blocks.1.norm2.weight", "blocks.1.norm3.weight"),
            ("blocks.1.ffn.net.0.proj.weight", "blocks.1.ffn.0.weight"),
            ("blocks.1.ffn.net.2.bias", "blocks.1.ffn.2.bias"),
            ("blocks.29.scale_shift_table", "blocks.29.modulation"),
        ];
        let plain = key_map_for(&keys(&["patch_embedding.weight", "head.modulation"]))
            .expect("original layout detected");
        let comfy = key_map_for(&keys(&["model.diffusion_model.head.modulation"]))
            .expect("ComfyUI layout detected");
        for (diffusers, original) in cases {
            assert_eq!(plain(diffusers), original);
            assert_eq!(
                comfy(diffusers),
                format!("model.diffusion_model.{original}")
            );
        }
    }
}
