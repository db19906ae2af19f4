// The pod sandbox ("pause") process of the real test node: registries are unreachable here, so the
// sandbox image is built locally from this module (mk/images.mk).
module edgequant.local/tools/pause

go 1.26.0
