#!/usr/bin/env bash
# Regenerates the real-file seeds (seed-*) of tests/fuzz/corpus/<target>/ from the shared golden
# and trained tiny models with the dsq CLI.  Each seed stays under libFuzzer's -max_len (64 KiB)
# so mutations see the whole file.  Usage: DSQ_BIN=build/dsq tests/fuzz/make-seeds.sh [SHARED]
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${DSQ_BIN:-build/dsq}
S=${1:-../shared}
G=$S/golden/v4-tiny/model
M=$S/models/v4-tiny-trained
C=tests/fuzz/corpus
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p $C/{safetensors,st_index,config,container,dsqz,recipe,tokenizer,token_ids,token_file,kbase,mc_task}

# containers: real conversions of the golden (release) and trained (int4, carries tokenizer.json
# and its config) models, cut to a few small tensors with unpack --tensor, and their .dsqz forms
$D convert "$G" "$tmp/g.dsq" --recipe release >/dev/null
$D convert "$M" "$tmp/t.dsq" --recipe int4 >/dev/null
$D pack "$tmp/g.dsq" "$tmp/g.dsqz" >/dev/null
$D pack "$tmp/t.dsq" "$tmp/t.dsqz" >/dev/null
$D unpack "$tmp/g.dsqz" $C/container/seed-golden-norms.dsq --overwrite --tensor norm.weight \
  --tensor layers.0.attn_norm.weight --tensor layers.1.attn.compressor.ape --tensor hc_head_base >/dev/null
$D unpack "$tmp/t.dsqz" $C/container/seed-trained-fp8.dsq --overwrite --tensor layers.0.attn.wkv.weight \
  --tensor layers.0.attn.attn_sink --tensor hc_head_scale >/dev/null
$D unpack "$tmp/g.dsqz" $C/container/seed-golden-fp8.dsq --overwrite --tensor mtp.0.attn.wkv.weight >/dev/null
for f in seed-golden-norms seed-trained-fp8; do
  $D pack $C/container/$f.dsq $C/dsqz/$f.dsqz --level 19 --overwrite >/dev/null
done

# safetensors: a real token file; st_index: the index of the two fixed shards of the target
printf '{"tokens":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}' > "$tmp/h"
hl=$(stat -c %s "$tmp/h")
{ printf "$(printf '\\x%02x' $((hl & 255)) $((hl >> 8)) 0 0 0 0 0 0)"; cat "$tmp/h";
  printf '\x01\x00\x00\x00\x02\x01\x00\x00\x05\x00\x00\x00\xff\x01\x00\x00'; } > $C/token_file/seed-tokens.safetensors
cp $C/token_file/seed-tokens.safetensors $C/safetensors/seed-tokens.safetensors
$D tokenize "$M" "$(head -c 400 "$M/test.txt")" | tr -d '[]' | tr ',' ' ' > $C/token_file/seed-ids.txt
$D tokenize "$M" "$(head -c 200 "$M/valid.txt")" > $C/token_ids/seed-trained.json
printf '{"metadata":{"total_size":8},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}' > $C/st_index/seed-two.json
printf '{\n  "metadata": {"total_size": 8},\n  "weight_map": {\n    "y": "b.safetensors",\n    "x": "a.safetensors"\n  }\n}\n' \
  > $C/st_index/seed-pretty.json

# config.json of both models; recipes: every built-in as canonical JSON
cp "$G/config.json" $C/config/seed-golden.json
cp "$M/config.json" $C/config/seed-trained.json
for r in $($D recipes | awk '{print $1}'); do $D recipes "$r" --json > $C/recipe/seed-$r.json; done
printf '{"name":"mine","rules":[{"match":"layers.*.ffn.experts.*","encoding":"int4-g64-asym"},{"match":"family:attention","encoding":"fp8-128x128"},{"match":"*","encoding":"keep"}]}' \
  > $C/recipe/seed-mixed.json

# tokenizer: the trained tokenizer.json, NUL, a line of its own test text
{ cat "$M/tokenizer.json"; printf '\0'; head -c 300 "$M/test.txt"; } > $C/tokenizer/seed-trained

# KL bases of the trained model (two plans: BOS and no BOS, different k and seeds)
head -c 3000 "$M/test.txt" > "$tmp/text"
$D eval kld "$M" "$tmp/text" --save-base $C/kbase/seed-k4.kbase --ctx 16 --chunks 2 --top-k 4 --overwrite >/dev/null
$D eval kld "$M" "$tmp/text" --save-base $C/kbase/seed-k16.kbase --ctx 12 --chunks 3 --top-k 16 --no-bos \
  --seed 7 --temperature 0.5 --overwrite >/dev/null

# MC tasks (HellaSwag-style JSONL): both key spellings, string and number labels, CRLF
printf '%s\n' '{"ctx": "The cat sat on the", "endings": ["mat.", "moon.", "idea."], "label": 0}' \
  '{"context": "Caf\u00e9 \u2615 is", "endings": ["hot", "cold"], "label": "1", "extra": [1, {"a": null}]}' \
  > $C/mc_task/seed-two.jsonl
printf '{"ctx":"a","endings":["x","y","z","w"],"label":3}\r\n\r\n{"ctx":"b b","endings":["1","2"],"label":0}\r\n' \
  > $C/mc_task/seed-crlf.jsonl
# modelopt_qcfg: the hf_quant_config.json of a real ModelOpt NVFP4 export of the golden model
mkdir -p $C/modelopt_qcfg
$D convert "$G" "$tmp/nv.dsq" --recipe release --override 'family:routed_experts=nvfp4' >/dev/null
$D export "$tmp/nv.dsq" "$tmp/mo" --format modelopt-nvfp4 >/dev/null
cp "$tmp/mo/hf_quant_config.json" $C/modelopt_qcfg/seed-dsq-export.json
printf '{\n  "producer": {"name": "modelopt", "version": "0.23.0"},\n  "quantization": {\n    "quant_algo": "NVFP4",\n    "kv_cache_quant_algo": null,\n    "group_size": 16,\n    "exclude_modules": ["lm_head", "model.layers.0.self_attn*"]\n  }\n}\n' \
  > $C/modelopt_qcfg/seed-modelopt-style.json
ls -l $C/*/seed-* | awk '{s += $5} END {print NR " seeds, " s " bytes"}'
