// Renders /openapi.json for people. Everything is built with DOM calls and
// textContent, never innerHTML, so nothing in the document can run as code.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function schemaBlock(schema) {
  return el("pre", {}, JSON.stringify(schema, null, 2));
}

function renderOperation(path, method, op) {
  const card = el("section", { class: "op", id: `${method}-${path}` });
  card.append(el("h2", {},
    el("span", { class: `method ${method}` }, method.toUpperCase()),
    el("span", { class: "path" }, path),
    el("span", { class: "summary" }, op.summary || "")));
  if (op.description) card.append(el("p", {}, op.description));
  if (op.parameters && op.parameters.length) {
    card.append(el("h3", {}, "Query parameters"));
    const table = el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "schema"), el("th", {}, "about")));
    for (const p of op.parameters) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)),
        el("td", {}, el("code", {}, JSON.stringify(p.schema))), el("td", {}, p.description || "")));
    }
    card.append(table);
  }
  if (op.requestBody) {
    card.append(el("h3", {}, "Request body"));
    for (const [type, media] of Object.entries(op.requestBody.content)) {
      card.append(el("div", {}, el("code", {}, type)), schemaBlock(media.schema));
    }
  }
  card.append(el("h3", {}, "Responses"));
  const table = el("table", {});
  for (const [status, response] of Object.entries(op.responses)) {
    const types = Object.entries(response.content || {});
    const cell = el("td", {}, response.description || "");
    for (const [type, media] of types) cell.append(el("div", {}, el("code", {}, type)), schemaBlock(media.schema));
    table.append(el("tr", {}, el("td", {}, el("code", {}, status)), cell));
  }
  card.append(table);
  return card;
}

async function main() {
  const response = await fetch("/openapi.json");
  const spec = await response.json();
  document.title = `${spec.info.title} ${spec.info.version} API`;
  document.getElementById("description").textContent = spec.info.description;
  const paths = document.getElementById("paths");
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) paths.append(renderOperation(path, method, op));
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries(spec.components.schemas)) {
    schemas.append(el("h3", { id: `schema-${name}` }, name), schemaBlock(schema));
  }
}

main().catch((error) => {
  document.getElementById("description").textContent = `Could not load /openapi.json: ${error}`;
});
