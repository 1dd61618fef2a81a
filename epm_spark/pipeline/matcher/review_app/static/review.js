// Keys for the pairs queue: m = match, n = no match, s = skip. Typing in a field is left alone, so a
// note can hold these letters. The page works without this file: the buttons are plain form buttons.
"use strict";
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  var target = event.target;
  if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.isContentEditable)) return;
  var button = document.getElementById({m: "btn-match", n: "btn-no-match", s: "btn-skip"}[event.key]);
  if (!button || button.disabled) return;
  event.preventDefault();
  button.disabled = true;  // one verdict per key press, even when the key bounces
  // A disabled button is not submitted with the form, so send its value along explicitly.
  var form = button.form;
  var field = document.createElement("input");
  field.type = "hidden";
  field.name = button.name;
  field.value = button.value;
  form.appendChild(field);
  form.submit();
});
