package mediaapi

import "testing"

func TestParseOpenGraph(t *testing.T) {
	page := []byte(`<html><head><title>The Rock &amp; more</title>
<meta property="og:title" content="The Rock" />
<META property='og:type' content='video.movie'>
<meta name="description" content="A film">
<meta property="og:image" content="test.png" /></head><body><meta property="og:title" content="not this"></body></html>`)
	og := parseOpenGraph(page)
	if og["og:title"] != "The Rock" || og["og:type"] != "video.movie" || og["og:image"] != "test.png" || og["og:description"] != "A film" {
		t.Fatalf("%v", og)
	}
	if og := parseOpenGraph([]byte(`<title>Only &lt;title&gt;</title>`)); og["og:title"] != "Only <title>" {
		t.Fatalf("fallback: %v", og)
	}
}
