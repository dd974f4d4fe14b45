# Evaluate a package expression (default.nix) with stand-ins for nixpkgs:
# every argument is its own name, buildPythonPackage returns its attrs.
{ path }:
let
  fn = import path;
  lib = {
    fileset = { toSource = _: "<src>"; unions = xs: xs; maybeMissing = p: p; };
    licenses.asl20 = "asl20";
    platforms.linux = [ "linux" ];
  };
  stubs = builtins.mapAttrs (name: _: name) (builtins.functionArgs fn);
  args = stubs // { inherit lib; buildPythonPackage = attrs: attrs; };
in
fn args
