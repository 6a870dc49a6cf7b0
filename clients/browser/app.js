// Entry point of the Hydrogen web client as served to the browser. This is essentially
// hydrogen-web's own src/main.js + index.html bootstrap, built from the published
// hydrogen-view-sdk package (which ships the complete app: RootViewModel/RootView render the
// login screen, session picker, room list, create-room form, timeline and composer).
import {
  Platform,
  Client,
  RootViewModel,
  FeatureSet,
  createNavigation,
  createRouter,
} from "hydrogen-view-sdk";

const assetPaths = {
  downloadSandbox: "/assets/download-sandbox.html",
  worker: "/assets/main.js",
  // olm (end-to-end encryption) only with ?e2ee=1: with olm loaded, Hydrogen uploads device
  // keys right after login (POST /keys/upload) and aborts the session if that fails.
  olm: new URLSearchParams(location.search).get("e2ee") === "1" ? {
    wasm: "/olm/olm.wasm",
    legacyBundle: "/olm/olm_legacy.js",
    wasmBundle: "/olm/olm.js",
  } : undefined,
  // Hydrogen's service worker (offline cache, media auth, push); the Client requires it.
  serviceWorker: "/sw.js",
};

async function main() {
  const platform = new Platform({
    container: document.body,
    assetPaths,
    configURL: "/config.json",
    options: { development: false },
  });
  await platform.init();
  const navigation = createNavigation();
  platform.setNavigation(navigation);
  const urlRouter = createRouter({ navigation, history: platform.history });
  urlRouter.attach();
  const features = await FeatureSet.load(platform.settingsStorage);
  const vm = new RootViewModel({ platform, urlRouter, navigation, features });
  await vm.load();
  platform.createAndMountRootView(vm);

  // Hydrogen 0.3 has no registration screen, but its Client does implement the
  // registration API (UIA with m.login.dummy). Expose it so the test can create accounts
  // from the browser origin using the client's own HTTP stack.
  window.__registerAccount = async (homeserver, username, password) => {
    const client = new Client(platform);
    const registration = await client.startRegistration(homeserver, username, password, "repeater-browser-check");
    let stage = await registration.start();
    while (stage) {
      stage = await registration.submitStage(stage);
    }
    return registration.authData.userId;
  };
  window.__hydrogenReady = true;
}

main().catch((err) => {
  console.error(`hydrogen failed to start: ${err && err.stack || err}`);
  window.__hydrogenError = String(err && err.message || err);
});
