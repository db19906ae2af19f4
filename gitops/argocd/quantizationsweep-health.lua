-- Argo CD health check for edgequant.io/QuantizationSweep.
-- Runs in Argo CD's embedded Lua (5.1 semantics) and in Lua 5.4: plain tables and string functions only.
-- Completed=True: Healthy when a cell met the budget, Degraded when none did; Failed=True (an invalid sweep): Degraded.

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

local function text(v, fallback)
  if type(v) == "string" and v ~= "" then
    return v
  end
  return fallback
end

local function recommended(status)
  if status.recommendations == nil then
    return ""
  end
  local parts = {}
  for _, r in ipairs(status.recommendations) do
    if r.candidate ~= nil and r.candidate ~= "" then
      table.insert(parts, r.target .. ": " .. r.candidate)
    end
  end
  return table.concat(parts, ", ")
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the edgequant operator to pick up the sweep"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local failed = condition(status, "Failed")
local completed = condition(status, "Completed")

if is_true(failed) or status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = text(failed and failed.reason, "Failed") .. ": " .. text(failed and failed.message, text(status.message, "invalid sweep"))
  return hs
end

if is_true(completed) or status.phase == "Completed" then
  if status.passed == nil or status.passed == 0 then
    hs.status = "Degraded"
    hs.message = text(status.message, "no cell met the acceptance budget")
    return hs
  end
  hs.status = "Healthy"
  local chosen = recommended(status)
  if chosen ~= "" then
    hs.message = text(status.message, "Completed") .. "; recommended " .. chosen
  else
    hs.message = text(status.message, "Completed")
  end
  return hs
end

if status.phase == nil or status.phase == "Pending" or status.phase == "Running" then
  hs.status = "Progressing"
  hs.message = text(status.phase, "Pending") .. ": " .. text(status.message, "waiting for the cells")
  return hs
end

hs.status = "Unknown"
hs.message = "Unrecognised phase " .. tostring(status.phase)
return hs
