-- Argo CD health check for edgequant.io/QuantizationJob.
-- Runs in Argo CD's embedded Lua (5.1 semantics) and in Lua 5.4: plain tables and string functions only.
-- Conditions decide; status.phase is the fallback for objects written before conditions existed.

local hs = {}

local function condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

-- The first argument that is a non-empty string; nil arguments are skipped (so no ipairs over them).
local function first_text(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" and v ~= "" then
      return v
    end
  end
  return ""
end

local function joined(sep, a, b)
  if a ~= "" and b ~= "" then
    return a .. sep .. b
  end
  return first_text(a, b)
end

local function summary(results)
  if results == nil then
    return ""
  end
  local parts = {}
  if results.method ~= nil then
    table.insert(parts, results.method)
  end
  if results.compressionRatio ~= nil then
    table.insert(parts, string.format("ratio %.2fx", results.compressionRatio))
  end
  if results.accuracyDrop ~= nil then
    table.insert(parts, string.format("accuracy drop %.4f", results.accuracyDrop))
  end
  if results.artifact ~= nil and results.artifact.uri ~= nil then
    table.insert(parts, results.artifact.uri)
  end
  return table.concat(parts, ", ")
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the edgequant operator to pick up the job"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local failed = condition(status, "Failed")
local succeeded = condition(status, "Succeeded")
local degraded = condition(status, "Degraded")
local suspended = condition(status, "Suspended")
local running = condition(status, "Running")

if is_true(failed) or status.phase == "Failed" then
  hs.status = "Degraded"
  local reason = first_text(failed and failed.reason, status.reason)
  local message = first_text(failed and failed.message, status.message)
  hs.message = first_text(joined(": ", reason, message), "Quantization failed")
  return hs
end

if is_true(succeeded) or status.phase == "Succeeded" then
  if is_true(degraded) or (status.results ~= nil and status.results.degraded == true) then
    hs.status = "Degraded"
    hs.message = joined(": ", "Published a degraded artifact",
      joined(" - ", summary(status.results),
        first_text(degraded and degraded.message, status.message, "acceptance budget not met")))
    return hs
  end
  hs.status = "Healthy"
  hs.message = first_text(summary(status.results), status.message, "Quantization succeeded")
  return hs
end

if is_true(suspended) or status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = first_text(suspended and suspended.message, status.message, "Suspended")
  return hs
end

if is_true(running) or status.phase == "Running" or status.phase == "Pending" or status.phase == "Queued" or status.phase == nil then
  hs.status = "Progressing"
  local stage = ""
  if status.progress ~= nil and status.progress.stage ~= nil and status.progress.stage ~= "" then
    stage = " (stage: " .. status.progress.stage .. ")"
  end
  hs.message = joined(": ", first_text(status.phase, "Pending") .. stage,
    first_text(running and running.message, status.message, "waiting for the quantizer pod"))
  return hs
end

hs.status = "Unknown"
hs.message = "Unrecognised phase " .. tostring(status.phase)
return hs
