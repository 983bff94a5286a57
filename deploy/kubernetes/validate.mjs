// Validates rendered Kubernetes manifests (a YAML stream on stdin, e.g. `kubectl kustomize
// deploy/kubernetes`) offline, against the schemas that the npm packages `kubernetes-models`
// (Kubernetes' own) and `@kubernetes-models/keda` (KEDA's CRDs) bundle. One line per object;
// exit 1 when one is not valid, or of a kind no schema is known for.
//   kubectl kustomize deploy/kubernetes | NODE_PATH=... node deploy/kubernetes/validate.mjs
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// Modules by their files under NODE_PATH (the packages' export maps name no CommonJS entry).
const modules = process.env.NODE_PATH.split(":")[0];
const resolve = (file) => pathToFileURL(join(modules, file)).href;
const { parseAllDocuments } = await import(resolve("yaml/dist/index.js"));

// apiVersion -> the module that holds its kinds.
function moduleOf(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group.endsWith("keda.sh")) return `@kubernetes-models/keda/${group}/${version}/index.js`;
  return `kubernetes-models/${group === "" ? "" : group + "/"}${version}/index.js`;
}

let failed = 0;
const docs = parseAllDocuments(readFileSync(0, "utf8")).map((d) => d.toJS()).filter(Boolean);
if (docs.length === 0) {
  console.error("no object to validate");
  process.exit(1);
}
for (const doc of docs) {
  const name = `${doc.apiVersion} ${doc.kind} ${doc.metadata?.name}`;
  try {
    const kinds = await import(resolve(moduleOf(doc.apiVersion)));
    const Kind = kinds[doc.kind];
    if (!Kind) throw new Error(`no schema for kind ${doc.kind}`);
    new Kind(doc).validate();
    console.log(`valid    ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`INVALID  ${name}: ${e.message.replace(/\s+/g, " ")}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
