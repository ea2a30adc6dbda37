package chart

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestChartMetadataIsWhatArtifactHubShows: the license, links and image
// Artifact Hub lists, and the maintainers, in step with the chart.
func TestChartMetadataIsWhatArtifactHubShows(t *testing.T) {
	t.Parallel()
	c := readChartYAML(t)
	if len(c.Maintainers) == 0 || c.Annotations["artifacthub.io/license"] != "Apache-2.0" {
		t.Errorf("maintainers %v license %q", c.Maintainers, c.Annotations["artifacthub.io/license"])
	}
	var images []struct{ Name, Image string }
	if err := yaml.Unmarshal([]byte(c.Annotations["artifacthub.io/images"]), &images); err != nil {
		t.Fatal(err)
	}
	// The default image: image.repository at the appVersion (hack/release.sh
	// rewrites both for a release).
	if want := "ghcr.io/nodecsr/kubelet-csr-controller:" + c.AppVersion; len(images) != 1 || images[0].Image != want {
		t.Errorf("artifacthub.io/images %+v, want one image %s", images, want)
	}
	var links []struct{ Name, URL string }
	if err := yaml.Unmarshal([]byte(c.Annotations["artifacthub.io/links"]), &links); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if path, ok := strings.CutPrefix(l.URL, "https://github.com/nodecsr/kubelet-csr-controller/blob/main/"); ok {
			if _, err := os.Stat("../../" + path); err != nil {
				t.Errorf("link %s: %v", l.Name, err)
			}
		}
	}
	if len(links) < 2 {
		t.Errorf("links %+v", links)
	}
}

func TestEveryObjectNamesItsComponent(t *testing.T) {
	t.Parallel()
	for key, md := range render(t, monitoringOn).metadata(t) {
		if md.Labels["app.kubernetes.io/component"] != "controller" || md.Labels["app.kubernetes.io/part-of"] != "kubelet-csr-controller" {
			t.Errorf("%s: labels %v", key, md.Labels)
		}
	}
	for key, md := range renderTests(t, "").metadata(t) {
		if md.Labels["app.kubernetes.io/component"] != "test" {
			t.Errorf("%s: labels %v", key, md.Labels)
		}
	}
}
