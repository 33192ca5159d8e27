# Sourced by the benchmarks: nginx_copies COUNT DIR [SED ARGS...] writes COUNT copies of
# policies/nginx.yaml into DIR, copy i named nginx-i on its own Deployment (nginx-i, selector
# app=nginx-i), with the shipped plugins and models found from the repository root. SED ARGS
# (e.g. -e 's/.../.../') are applied after, with $i meaning the copy's number.
nginx_copies() {
  local count=$1 dir=$2 root i
  shift 2
  root=$(pwd)
  mkdir -p "$dir"
  for i in $(seq 1 "$count"); do
    sed -e "s/^name: nginx$/name: nginx-$i/" -e "s/^  name: nginx$/  name: nginx-$i/" -e "s/^  selector: app=nginx$/  selector: app=nginx-$i/" \
        -e "s#\.\./plugins/dist#$root/plugins/dist#g" -e "s#\.\./models#$root/models#g" \
        "${@//\$i/$i}" policies/nginx.yaml >"$dir/nginx-$i.yaml"
  done
}
