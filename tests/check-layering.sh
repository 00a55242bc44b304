#!/usr/bin/env bash
# The layering check (docs/architecture.md "Layering"), run by `make all`:
#   tests/check-layering.sh ROOT [BUILD]
# Dependencies point one way: lib/core <- lib/format <- lib/quant <- lib/eval <- cmd/.
#  1. every `#include "X"` in ROOT/lib/L/*.{c,h} names a header of L or of a layer below it (lib/eval
#     may also include kernels/' C headers); an include with a path ("../quant/x.h") is refused, since
#     it would bypass the per-folder -I paths the Makefile compiles each folder with;
#  2. with BUILD: no archive BUILD/libdsq_L.a leaves a symbol undefined that a higher layer's archive
#     defines (a prototype written by hand does not get around 1.);
#  3. cmd/ parses no JSON: no cJSON include or call in ROOT/cmd (the metadata reader is lib/format's).
# Prints one line per violation, "layering: FILE:LINE: what", and exits 1 if there is any.
set -u
root=${1:?usage: check-layering.sh ROOT [BUILD]}
build=${2:-}
layers=(core format quant eval)
bad=0
say() { echo "layering: $*" >&2; bad=$((bad + 1)); }

# header name -> folder that holds it ("core", ..., "kernels")
declare -A owner
for l in "${layers[@]}" kernels; do
  d=$root/lib/$l; [ "$l" = kernels ] && d=$root/kernels
  [ -d "$d" ] || continue
  for h in "$d"/*.h; do
    [ -e "$h" ] || continue
    owner[${h##*/}]=$l
  done
done

for i in "${!layers[@]}"; do
  l=${layers[$i]}
  allowed=" ${layers[*]:0:$((i + 1))} "
  [ "$l" = eval ] && allowed="$allowed kernels "
  while IFS=: read -r f line inc; do
    rel=${f#"$root"/}
    [[ $inc =~ include[[:space:]]*\"([^\"]*)\" ]] || continue
    name=${BASH_REMATCH[1]}
    if [[ $name == */* ]]; then
      say "$rel:$line: #include \"$name\" has a path (lib/ headers are found through each layer's -I paths)"
      continue
    fi
    o=${owner[$name]:-}
    if [ -z "$o" ]; then
      say "$rel:$line: #include \"$name\": no such header in lib/ or kernels/"
    elif [[ $allowed != *" $o "* ]]; then
      where=lib/$o; [ "$o" = kernels ] && where=kernels
      say "$rel:$line: #include \"$name\" is $where's: lib/$l may include only${allowed% } (upward include)"
    fi
  done < <(grep -Hn '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$root"/lib/"$l"/*.[ch] 2>/dev/null)
done

if [ -n "$build" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for l in "${layers[@]}"; do
    a=$build/libdsq_$l.a
    [ -f "$a" ] || { say "$a: missing (make builds one archive per lib/ folder)"; continue; }
    nm -u "$a" 2>/dev/null | awk 'NF {print $NF}' | sort -u >"$tmp/undef.$l"
    nm -g --defined-only "$a" 2>/dev/null | awk 'NF == 3 {print $3}' | sort -u >"$tmp/def.$l"
  done
  for i in "${!layers[@]}"; do
    l=${layers[$i]}
    [ -f "$tmp/undef.$l" ] || continue
    for j in "${!layers[@]}"; do
      h=${layers[$j]}
      [ "$j" -gt "$i" ] && [ -f "$tmp/def.$h" ] || continue
      for sym in $(comm -12 "$tmp/undef.$l" "$tmp/def.$h"); do
        say "$build/libdsq_$l.a: uses $sym, defined in lib/$h (upward reference)"
      done
    done
  done
fi

while IFS=: read -r f line text; do
  text=${text#"${text%%[![:space:]]*}"}
  say "${f#"$root"/}:$line: JSON parsing in cmd/ (${text:0:60}): lib/ reads files, cmd/ only prints"
done < <(grep -Hn 'cjson/\|cJSON\|dsq_json\.h\|dsq_json_parse' "$root"/cmd/*.[ch] 2>/dev/null)

if [ "$bad" -ne 0 ]; then
  echo "layering: $bad violation(s) of core <- format <- quant <- eval <- cmd (docs/architecture.md)" >&2
  exit 1
fi
exit 0
